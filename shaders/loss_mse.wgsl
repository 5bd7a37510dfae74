// Loss: mean squared error of the rendered colour against the target, per slot, weighted by the
// slot's cut (level weight) and its lambda. Adds its dLoss/d(colour) to the slot's RayGrad and writes
// its unweighted share of the mean (for the statistics) to row TERM_MSE of `losses` (the header
// numbers the terms of records::LOSS_NAMES). An injected loss spike (`loss.fault`, normally 1)
// multiplies the value and the gradient.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = ray_slot(wg, nwg, local);
    if s.index >= s.count {
        return;
    }
    let target_rgb = rays[s.ray].target_rgb;
    let diff = outputs[s.index].rgb - target_rgb.xyz;
    losses[TERM_MSE * s.count + s.index] = dot(diff, diff) * target_rgb.w * loss.inv_count * loss.fault;
    ray_grads[s.index].rgb += 2.0 * diff * target_rgb.w * loss.inv_count * term_weight(TERM_MSE, s.cut) * loss.fault;
}
