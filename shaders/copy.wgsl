// Bandwidth reference for `infnerf bench`: a plain copy, 16 bytes per invocation.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let i = flat_index(wg, nwg, local, WORKGROUP);
    if i < arrayLength(&src) {
        dst[i] = src[i];
    }
}
