// Loss: geometry consistency of the rendered depth between adjacent tree cuts (seed §1.2, SPEC
// §3.2): for each rendered cut and the next finer rendered cut (loss.finer_cut), the smooth L1
// (Huber) of their depth difference per ray, threshold delta = loss.huber_delta:
//   h(d) = d^2 / (2 delta) for |d| < delta, |d| - delta / 2 beyond,
// the mean over the rays with a target, weighted by lambda alone (it compares two cuts: no level
// weight). Both cuts get the gradient: the coarse cut is pulled toward the fine one's surfaces and
// the fine one kept from drifting where only the coarse one is supervised (the pyramid's coarse
// patches). The value of a pair is kept at the coarser cut's slot; each slot gathers its gradient
// as the coarser member of its pair and as the finer member of any pair (no other slot is written).

fn huber_slope(d: f32) -> f32 {
    return clamp(d / loss.huber_delta, -1.0, 1.0);
}

fn huber(d: f32) -> f32 {
    let a = abs(d);
    return select(a - 0.5 * loss.huber_delta, 0.5 * a * a / loss.huber_delta, a < loss.huber_delta);
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = ray_slot(wg, nwg, local);
    if s.index >= s.count {
        return;
    }
    var value = 0.0;
    var d_depth = 0.0;
    if on_image(s.ray) {
        let depth = outputs[s.index].depth;
        let finer = loss.finer_cut[s.cut];
        if finer != NO_CUT {
            let d = depth - outputs[finer * batch.n_rays + s.ray].depth;
            value = huber(d);
            d_depth += huber_slope(d);
        }
        for (var c = 0u; c < batch.n_cuts; c++) {
            if loss.finer_cut[c] == s.cut {
                d_depth -= huber_slope(outputs[c * batch.n_rays + s.ray].depth - depth);
            }
        }
    }
    losses[TERM_DEPTH_CONSISTENCY * s.count + s.index] = value * loss.inv_rays;
    ray_grads[s.index].depth += d_depth * loss.inv_rays * term_lambda(TERM_DEPTH_CONSISTENCY);
}
