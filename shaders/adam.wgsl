// Pass 7: Adam over one page of parameters, with one learning rate for the hash tables and one for
// the decoders (SPEC §4). Each invocation takes one block of ADAM_BLOCK (header) consecutive
// parameters, and only if field_backward flagged it in `touched` (most hash entries get no gradient in
// a step: the work follows the parameters touched, whatever the size of the tree). Entries without
// gradient keep their moments (sparse updates). Clears the gradients and the flags for the next step.
// Non-finite gradients are dropped and counted.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let block = flat_index(wg, nwg, local, WORKGROUP);
    let first = block * ADAM_BLOCK;
    if first >= page.n_params || touched[block] == 0u {
        return;
    }
    touched[block] = 0u;
    let last = min(first + ADAM_BLOCK, page.n_params);
    for (var i = first; i < last; i++) {
        update(i);
    }
}

fn update(i: u32) {
    let raw = grads[i];
    if bitcast<u32>(raw) == 0u {
        return;
    }
    grads[i] = 0.0;
    if nonfinite(raw) {
        atomicAdd(&sanitized[SANITIZED_ADAM], 1u);
        return;
    }
    // a page starts at a node's block, so the offset inside the block is i % NODE_PARAMS
    let lr = select(adam.lr_mlp, adam.lr_hash, i % NODE_PARAMS < HASH_PARAMS);
    let m = adam.beta1 * m1[i] + (1.0 - adam.beta1) * raw;
    let v = adam.beta2 * m2[i] + (1.0 - adam.beta2) * raw * raw;
    m1[i] = m;
    m2[i] = v;
    params[i] -= lr * (m / adam.bias1) / (sqrt(v / adam.bias2) + adam.eps);
}
