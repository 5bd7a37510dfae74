// Loss: density sparsity (seed §1 regularisation): the mean of |sigma| = sigma over the step's sample
// slots, samples skipped as empty space counting as 0, weighted by lambda and the slot's cut weight.
// It acts on the samples directly, so it runs after render_backward and adds its constant gradient
// lambda * weight / (sample slots) to the density gradient of every evaluated sample of the slot
// (times the loss scale, as render_backward stores them).

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let slot = flat_index(wg, nwg, local, WORKGROUP);
    let n_slots = batch.n_rays * batch.n_cuts;
    if slot >= n_slots {
        return;
    }
    let d_sigma = loss.lambdas[TERM_SPARSITY / 4u][TERM_SPARSITY % 4u] * loss.cut_weights[slot / batch.n_rays] * loss.inv_samples;
    let first = slot * batch.samples_per_ray;
    let scaled = vec4<f32>(0.0, 0.0, 0.0, d_sigma * guard[G_LOSS_SCALE]);
    var total = 0.0;
    for (var i = 0u; i < batch.samples_per_ray; i++) {
        if samples[first + i].node == NO_NODE {
            continue;
        }
        total += field_out[first + i].w;
        sample_grads[first + i] = to_grad_record(vec4<f32>(sample_grads[first + i]) + scaled);
    }
    losses[TERM_SPARSITY * n_slots + slot] = total * loss.inv_samples;
}
