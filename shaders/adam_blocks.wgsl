// Pass 7 when a step runs in several chunks (adam_nodes.wgsl otherwise): Adam over the blocks of
// ADAM_BLOCK (header) consecutive parameters of one page that field_backward flagged in `touched`,
// for the step's every chunk. Entries without gradient keep their moments (sparse updates). Clears
// the gradients and the flags for the next step.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    adam_guard_load();
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
    adam_update(i, raw);
}
