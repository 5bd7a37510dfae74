// Loss: total variation of the rendered patches (seed §1 regularisation, SPEC §3.3): the mean
// absolute difference between horizontally and vertically adjacent pixels of a patch (or of a
// structure patch, whose tiles join into one square: ray_loss.wgsl), of the colour
// (term TV, per channel) and of the depth (term TV_DEPTH), summed over the two directions. Pairs with
// a pixel off the image count as 0; the mean is over every pair of the step's patches. Each slot
// writes the loss of the pairs to its right and below (so no pair counts twice) and adds to its own
// RayGrad the gradient of every pair it is in: its neighbours' values are read, never written.
// Weighted like every per-cut term by lambda and the slot's cut weight.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = ray_slot(wg, nwg, local);
    if s.index >= s.count {
        return;
    }
    let slot = s.index;
    let square = structure_of(s.ray);
    let x = square.pixel.x;
    let y = square.pixel.y;
    let size = square.size;
    let lambda_rgb = term_weight(TERM_TV, s.cut);
    let lambda_depth = term_weight(TERM_TV_DEPTH, s.cut);
    let me = outputs[slot];
    let inside = on_image(s.ray);
    var value_rgb = 0.0;
    var value_depth = 0.0;
    var d_rgb = vec3<f32>(0.0);
    var d_depth = 0.0;
    // left, right, up, down neighbours inside the square (patch or structure patch)
    for (var k = 0u; k < 4u; k++) {
        var exists = false;
        var at = square.pixel;
        switch k {
            case 0u: { exists = x > 0u; at.x -= 1u; }
            case 1u: { exists = x + 1u < size; at.x += 1u; }
            case 2u: { exists = y > 0u; at.y -= 1u; }
            default: { exists = y + 1u < size; at.y += 1u; }
        }
        if !exists {
            continue;
        }
        let ray = structure_ray(square, at);
        if !inside || !on_image(ray) {
            continue;
        }
        let n = s.cut_first + ray;
        let other = outputs[n];
        let diff = me.rgb - other.rgb;
        let diff_depth = me.depth - other.depth;
        d_rgb += sign(diff);
        d_depth += sign(diff_depth);
        // the pair to the right and the one below belong to this slot
        if k == 1u || k == 3u {
            value_rgb += abs(diff.x) + abs(diff.y) + abs(diff.z);
            value_depth += abs(diff_depth);
        }
    }
    losses[TERM_TV * s.count + slot] = value_rgb * loss.inv_pairs;
    losses[TERM_TV_DEPTH * s.count + slot] = value_depth * 3.0 * loss.inv_pairs;
    ray_grads[slot].rgb += d_rgb * loss.inv_pairs * lambda_rgb;
    ray_grads[slot].depth += d_depth * 3.0 * loss.inv_pairs * lambda_depth;
}
