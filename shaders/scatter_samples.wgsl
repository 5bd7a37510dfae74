// Pass 2c: the node-sorted active list: each active sample at its node's offset plus its rank.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(3) var<storage, read> samples: array<Sample>;
@group(0) @binding(6) var<storage, read_write> active_list: array<u32>;
@group(0) @binding(10) var<storage, read> decoders: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = flat_index(wg, nwg, local, 64u);
    if s >= frame.n_rays * frame.samples_per_ray {
        return;
    }
    let sample = samples[s];
    if sample.node != NO_NODE {
        active_list[decoders[sample.node * DECODER_WORDS] + sample.rank] = s;
    }
}
