// A max pool, backward (a `NetStage`): one invocation per input value of the images with a
// backward; it takes the gradient of every window whose maximum it is (the first maximum in row
// order, as the reference picks), added to what a head wrote (`stage.accumulate`) or written.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    let in_area = stage.in_size * stage.in_size;
    let in_len = stage.in_channels * in_area;
    if index >= net.backward_images * in_len {
        return;
    }
    let image = index / in_len;
    let within = index % in_len;
    let c = within / in_area;
    let y = (within % in_area) / stage.in_size;
    let x = within % stage.in_size;
    let plane = stage.input + (image * stage.in_channels + c) * in_area;
    let out_plane = stage.output + (image * stage.out_channels + c) * stage.out_size * stage.out_size;
    let s = i32(stage.stride);
    let reach = i32(stage.kernel) - 1;
    // windows oy with oy * stride <= y <= oy * stride + kernel - 1
    let oy_first = max((i32(y) - reach + s - 1) / s, 0);
    let ox_first = max((i32(x) - reach + s - 1) / s, 0);
    let oy_last = min(i32(y) / s, i32(stage.out_size) - 1);
    let ox_last = min(i32(x) / s, i32(stage.out_size) - 1);
    var g = 0.0;
    for (var oy = oy_first; oy <= oy_last; oy++) {
        for (var ox = ox_first; ox <= ox_last; ox++) {
            var best = -3.0e38;
            var at = 0u;
            for (var ky = 0u; ky < stage.kernel; ky++) {
                for (var kx = 0u; kx < stage.kernel; kx++) {
                    let i = (u32(oy) * stage.stride + ky) * stage.in_size + u32(ox) * stage.stride + kx;
                    let v = acts[plane + i];
                    if v > best {
                        best = v;
                        at = i;
                    }
                }
            }
            if at == within % in_area {
                g += act_grads[out_plane + u32(oy) * stage.out_size + u32(ox)];
            }
        }
    }
    let i = stage.input + index;
    if stage.accumulate != 0u {
        act_grads[i] += g;
    } else {
        act_grads[i] = g;
    }
}
