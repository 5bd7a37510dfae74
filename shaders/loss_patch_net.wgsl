// Loss: a network on the rendered structure patches against their targets, per cut, weighted by
// its term's lambda and the cut's level weight, the mean over the step's squares (inv_squares):
// LPIPS (seed §1.1, SPEC §3.1) or the adversarial generator loss (seed §1.4). After the network's
// backward: the square's top-left slot writes its value (the net's values of the render summed),
// every slot on its image takes dL/d(colour) from the input tensor's gradient through the input's
// scaling (d x / d rgb = 2 / scale). With a second term (the discriminator's own loss, which trains
// the discriminator only), the top-left slot of cut 0 also writes it: the target's values plus the
// mean over the cuts of the renders' second values.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = ray_slot(wg, nwg, local);
    if s.index >= s.count || s.ray >= batch.grouped_patches * batch.patch_size * batch.patch_size {
        return;
    }
    let square = structure_of(s.ray);
    let index = square.first_patch / (square.tiles * square.tiles);
    let image = s.cut * net.squares + index;
    let p_count = net.positions;
    if all(square.pixel == vec2<u32>(0u)) {
        var value = 0.0;
        for (var p = 0u; p < p_count; p++) {
            value += values[image * p_count + p];
        }
        losses[net.term * s.count + s.index] = value * loss.inv_squares;
        if net.second_term != NO_TERM && s.cut == 0u {
            let renders = net.n_cuts * net.squares;
            var second = 0.0;
            for (var p = 0u; p < p_count; p++) {
                second += values[(renders + index) * p_count + p];
                for (var c = 0u; c < net.n_cuts; c++) {
                    second += values[(net.images + c * net.squares + index) * p_count + p] / f32(net.n_cuts);
                }
            }
            losses[net.second_term * s.count + s.index] = second * loss.inv_squares;
        }
    }
    if on_image(s.ray) {
        let pixels = net.size * net.size;
        let first = image * 3u * pixels + square.pixel.y * net.size + square.pixel.x;
        let g = vec3<f32>(act_grads[first], act_grads[first + pixels], act_grads[first + 2u * pixels]);
        ray_grads[s.index].rgb += 2.0 * g / net.scale.xyz * loss.inv_squares * term_weight(net.term, s.cut);
    }
}
