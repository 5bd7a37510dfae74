// Pass 3: the field at every active sample -> (rgb, sigma). Dispatched once per node over that node's
// part of the node-sorted active list, with the node's decoders bound as `decoder` (src/trainer.rs).

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> rays: array<Ray>;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(3) var<storage, read> samples: array<Sample>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read_write> field_out: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> active_list: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let k = flat_index(wg, nwg, local, 64u);
    if k >= decoder.count {
        return;
    }
    let s = active_list[decoder.list_offset + k];
    let sample = samples[s];
    let a = field_eval(decoder.node * NODE_PARAMS, node_local(nodes[decoder.node], sample.pos), rays[sample.ray].dir);
    let out = vec4<f32>(a.rgb, a.sigma);
    field_out[s] = vec4<f32>(sanitize(out.x), sanitize(out.y), sanitize(out.z), sanitize(out.w));
}
