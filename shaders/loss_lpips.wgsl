// Loss: LPIPS of the rendered structure patches against their targets (seed §1.1, SPEC §3.1), per
// cut, weighted by lambda and the cut's level weight; the mean over the step's squares
// (inv_squares). After lpips_head and the backward stages: the square's top-left slot writes its
// value (the head's values summed), every slot on its image takes dL/d(colour) from the input
// tensor's gradient through the scaling layer (d x / d rgb = 2 / scale).

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = ray_slot(wg, nwg, local);
    if s.index >= s.count || s.ray >= batch.grouped_patches * batch.patch_size * batch.patch_size {
        return;
    }
    let square = structure_of(s.ray);
    let image = s.cut * lpips.squares + square.first_patch / (square.tiles * square.tiles);
    if all(square.pixel == vec2<u32>(0u)) {
        var value = 0.0;
        for (var p = 0u; p < lpips.positions; p++) {
            value += values[image * lpips.positions + p];
        }
        losses[TERM_LPIPS * s.count + s.index] = value * loss.inv_squares;
    }
    if on_image(s.ray) {
        let pixels = lpips.size * lpips.size;
        let first = image * 3u * pixels + square.pixel.y * lpips.size + square.pixel.x;
        let g = vec3<f32>(act_grads[first], act_grads[first + pixels], act_grads[first + 2u * pixels]);
        ray_grads[s.index].rgb += 2.0 * g / lpips.scale.xyz * loss.inv_squares * term_weight(TERM_LPIPS, s.cut);
    }
}
