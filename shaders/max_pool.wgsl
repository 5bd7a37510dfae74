// A max pool, forward (a `NetStage`: kernel x kernel windows, stride, no padding): one invocation
// per output value of every image.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    let area = stage.out_size * stage.out_size;
    let out_len = stage.out_channels * area;
    if index >= net.images * out_len {
        return;
    }
    let image = index / out_len;
    let within = index % out_len;
    let c = within / area;
    let oy = (within % area) / stage.out_size;
    let ox = within % stage.out_size;
    let plane = stage.input + (image * stage.in_channels + c) * stage.in_size * stage.in_size;
    var best = -3.0e38;
    for (var ky = 0u; ky < stage.kernel; ky++) {
        for (var kx = 0u; kx < stage.kernel; kx++) {
            best = max(best, acts[plane + (oy * stage.stride + ky) * stage.in_size + ox * stage.stride + kx]);
        }
    }
    acts[stage.output + index] = best;
}
