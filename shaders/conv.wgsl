// A convolution and its ReLU, forward (a `NetStage` of LPIPS or the discriminator): one invocation
// per output value of every image, max(0, bias + the window's weighted inputs) (without the max
// where the stage has no ReLU); padding reads 0.

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
    let co = within / area;
    let oy = (within % area) / stage.out_size;
    let ox = within % stage.out_size;
    let in_area = stage.in_size * stage.in_size;
    let input = stage.input + image * stage.in_channels * in_area;
    let k = stage.kernel;
    // the window's first row and column on the input, and the part of it on the input
    let y0 = i32(oy * stage.stride) - i32(stage.pad);
    let x0 = i32(ox * stage.stride) - i32(stage.pad);
    let ky_first = u32(max(-y0, 0));
    let kx_first = u32(max(-x0, 0));
    let ky_end = u32(clamp(i32(stage.in_size) - y0, 0, i32(k)));
    let kx_end = u32(clamp(i32(stage.in_size) - x0, 0, i32(k)));
    var sum = weights[stage.bias + co];
    for (var ci = 0u; ci < stage.in_channels; ci++) {
        let w = stage.weights + (co * stage.in_channels + ci) * k * k;
        let plane = input + ci * in_area;
        for (var ky = ky_first; ky < ky_end; ky++) {
            let row = plane + u32(y0 + i32(ky)) * stage.in_size;
            for (var kx = kx_first; kx < kx_end; kx++) {
                sum += weights[w + ky * k + kx] * acts[row + u32(x0 + i32(kx))];
            }
        }
    }
    if stage.relu != 0u {
        sum = max(sum, 0.0);
    }
    acts[stage.output + index] = sum;
}
