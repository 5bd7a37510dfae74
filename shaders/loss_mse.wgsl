// Loss: mean squared error of the rendered colour against the target, per slot, weighted by the
// slot's cut (level weight) and its lambda. Adds its dLoss/d(colour) to the slot's RayGrad and writes
// its unweighted share of the mean (for the statistics) to row TERM_MSE of `losses` (the header
// numbers the terms of records::LOSS_NAMES).

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let slot = flat_index(wg, nwg, local, WORKGROUP);
    let n_slots = batch.n_rays * batch.n_cuts;
    if slot >= n_slots {
        return;
    }
    let target_rgb = rays[slot % batch.n_rays].target_rgb;
    let diff = outputs[slot].rgb - target_rgb.xyz;
    let weight = loss.lambdas[TERM_MSE / 4u][TERM_MSE % 4u] * loss.cut_weights[slot / batch.n_rays];
    losses[TERM_MSE * n_slots + slot] = dot(diff, diff) * target_rgb.w * loss.inv_count;
    ray_grads[slot].rgb += 2.0 * diff * target_rgb.w * loss.inv_count * weight;
}
