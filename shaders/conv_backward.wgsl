// A convolution and its ReLU, backward to the input (a `NetStage`): one invocation per input value
// of the images with a backward, gathering from every output whose window holds it,
// dL/dx = sum over (co, ky, kx) of w[co][ci][ky][kx] dL/dy[co][oy][ox] [y > 0] (the ReLU's
// derivative at 0 is 0, as PyTorch's; a stage without ReLU passes every gradient). Written, or added to what a head or later stage wrote
// (`stage.accumulate`). The weights' gradient is conv_weights_backward's.

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
    let ci = within / in_area;
    let y = i32((within % in_area) / stage.in_size);
    let x = i32(within % stage.in_size);
    let area = stage.out_size * stage.out_size;
    let output = stage.output + image * stage.out_channels * area;
    let k = stage.kernel;
    let stride = i32(stage.stride);
    var g = 0.0;
    // the kernel rows (columns) that reach row y (column x) from an output: ky = y + pad - oy stride,
    // so ky = (y + pad) mod stride, then every stride-th
    let ty0 = y + i32(stage.pad);
    let tx0 = x + i32(stage.pad);
    for (var ky = u32(ty0 % stride); ky < k && i32(ky) <= ty0; ky += stage.stride) {
        let oy = (ty0 - i32(ky)) / stride;
        if oy >= i32(stage.out_size) {
            continue;
        }
        for (var kx = u32(tx0 % stride); kx < k && i32(kx) <= tx0; kx += stage.stride) {
            let ox = (tx0 - i32(kx)) / stride;
            if ox >= i32(stage.out_size) {
                continue;
            }
            let at = output + u32(oy) * stage.out_size + u32(ox);
            let w = stage.weights + ci * k * k + ky * k + kx;
            for (var co = 0u; co < stage.out_channels; co++) {
                let o = at + co * area;
                if acts[o] > 0.0 || stage.relu == 0u {
                    g += weights[w + co * stage.in_channels * k * k] * act_grads[o];
                }
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
