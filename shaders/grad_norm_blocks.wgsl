// Pass 7a when a step runs in several chunks (grad_norm.wgsl otherwise): the statistics of the step's
// gradient over the blocks of one page that field_backward flagged in `touched`, the blocks
// adam_blocks will update (it clears the flags; this pass only reads them).

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let block = flat_index(wg, nwg, local, WORKGROUP);
    let first = block * ADAM_BLOCK;
    var acc: GradAcc;
    if first < page.n_params && touched[block] != 0u {
        for (var i = first; i < min(first + ADAM_BLOCK, page.n_params); i++) {
            let g = grads[i];
            if bitcast<u32>(g) != 0u {
                grad_acc_add(&acc, tensor_of(i % NODE_PARAMS), g);
            }
        }
    }
    grad_acc_flush(acc, local, (wg.y * nwg.x + wg.x) % GRAD_SLOTS);
}
