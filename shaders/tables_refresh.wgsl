// Mixed precision: the f16 copy of one page's hash tables made again from the f32 parameters, after
// the host wrote them (a new model, a checkpoint, a restored snapshot); during training Adam keeps
// the copy up to date entry by entry (adam_update.wgsl).

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let j = flat_index(wg, nwg, local, WORKGROUP);
    if j >= page.n_nodes * HASH_PARAMS {
        return;
    }
    let node = j / HASH_PARAMS;
    tables[j] = to_table_entry(params[node * NODE_PARAMS + j % HASH_PARAMS]);
}
