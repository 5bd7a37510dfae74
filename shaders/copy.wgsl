// Bandwidth reference for `infnerf bench`: a plain copy, 16 bytes per invocation.

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let i = (wg.y * nwg.x + wg.x) * 256u + local;
    if i < arrayLength(&src) {
        dst[i] = src[i];
    }
}
