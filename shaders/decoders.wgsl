// Pass 2d: copies every node's decoder parameters into its block of the decoder buffer, which the
// field passes bind as a uniform block (src/gpu/unrolled.rs says why), and the node's index into the
// block's header. Runs after each Adam update.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(10) var<storage, read_write> decoders: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let i = flat_index(wg, nwg, local, 64u);
    let node = i / MLP_PARAMS;
    if node >= frame.n_nodes {
        return;
    }
    let j = i % MLP_PARAMS;
    decoders[node * DECODER_WORDS + 4u + j] = params[node * NODE_PARAMS + HASH_PARAMS + j];
    if j == 0u {
        decoders[node * DECODER_WORDS + 2u] = bitcast<f32>(node);
    }
}
