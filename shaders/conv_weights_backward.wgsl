// A convolution's weight and bias gradients (a `NetStage`): one invocation per weight
// (out, in, ky, kx), then one per bias, each summing over the images with a backward and the
// output positions: dL/dw = sum dL/dz[co][oy][ox] x[ci][oy s - p + ky][ox s - p + kx], dL/db = sum
// dL/dz, with dL/dz = dL/dy [y > 0] behind a ReLU. Written to the weights' places in `grads`.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    let k = stage.kernel;
    let n_weights = stage.out_channels * stage.in_channels * k * k;
    if index >= n_weights + stage.out_channels {
        return;
    }
    let is_bias = index >= n_weights;
    var co = index - n_weights;
    var ci = 0u;
    var ky = 0u;
    var kx = 0u;
    if !is_bias {
        co = index / (stage.in_channels * k * k);
        ci = (index / (k * k)) % stage.in_channels;
        ky = (index / k) % k;
        kx = index % k;
    }
    let area = stage.out_size * stage.out_size;
    let in_area = stage.in_size * stage.in_size;
    var sum = 0.0;
    for (var image = 0u; image < net.backward_images; image++) {
        let output = stage.output + (image * stage.out_channels + co) * area;
        let plane = stage.input + (image * stage.in_channels + ci) * in_area;
        for (var oy = 0u; oy < stage.out_size; oy++) {
            let iy = i32(oy * stage.stride + ky) - i32(stage.pad);
            if !is_bias && (iy < 0 || iy >= i32(stage.in_size)) {
                continue;
            }
            for (var ox = 0u; ox < stage.out_size; ox++) {
                let o = output + oy * stage.out_size + ox;
                if stage.relu != 0u && acts[o] <= 0.0 {
                    continue;
                }
                if is_bias {
                    sum += act_grads[o];
                    continue;
                }
                let ix = i32(ox * stage.stride + kx) - i32(stage.pad);
                if ix >= 0 && ix < i32(stage.in_size) {
                    sum += act_grads[o] * acts[plane + u32(iy) * stage.in_size + u32(ix)];
                }
            }
        }
    }
    if is_bias {
        grads[stage.bias + co] = sum;
    } else {
        grads[stage.weights + index] = sum;
    }
}
