// Pass 7: Adam over the parameters of one page's nodes that have samples this step, node-batched like
// the field passes (a node per workgroup): the work follows the samples, not the size of the tree.
// Each workgroup of a node takes a part of it:
// - the node's first workgroup updates its decoders;
// - in a dense node (node_groups.wgsl: its samples touch at least as many entries as its tables hold
//   vec4s; a shallow tree's nodes), the workgroups split the tables and update every entry with a
//   gradient, a vec4 at a time;
// - in a sparse node (a deep tree has many nodes, each with few samples per step, whose entries are
//   scattered over its tables), each invocation recomputes its sample's corners as field_backward did
//   and claims each entry's gradient by swapping in 0: the first to reach an entry applies the whole
//   summed gradient, the others find 0.
// Entries without gradient keep their moments. grad_norm marked the sparse nodes' entries in
// `visited`; a claim clears the mark for the next step. (When a step runs in several chunks the samples of
// the earlier chunks are gone: adam_blocks.wgsl updates the blocks the backward flagged instead.)

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    adam_guard_load();
    let group = node_group(wg, nwg);
    let node = group.x;
    let base = (node - page.first_node) * NODE_PARAMS;
    let index = group_index(group);
    // workgroups past the page's last one take nothing
    if group.z == 0u {
        return;
    }
    if index == 0u {
        // the decoders, a vec4 at a time (HASH_PARAMS and MLP_PARAMS are whole vec4s)
        for (var q = local; q < MLP_PARAMS / 4u; q += WORKGROUP) {
            take4((base + HASH_PARAMS) / 4u + q, false);
        }
    }
    if node_dense(node) {
        let share = dense_share(node, index);
        for (var q = (share.x >> 2u) + local; q < (share.y >> 2u); q += WORKGROUP) {
            take4((base >> 2u) + q, true);
        }
    } else if local < group.z {
        let local_pos = node_local(nodes[node], samples[active_list[group.y + local]].pos);
        for (var l = 0u; l < HASH_LEVELS; l++) {
            let cell = grid_cell(l, local_pos);
            for (var c = 0u; c < 8u; c++) {
                let idx = base + hash_index(l, cell.xyz + corner_offset(c));
                claim(idx);
                claim(idx + 1u);
            }
        }
    }
}

// The four entries of element q (hash-table entries when `hash`, else decoder parameters), which
// only this invocation visits: a plain read and clear (`grad_values` is `grads` unsynchronised, four
// entries per element).
fn take4(q: u32, hash: bool) {
    let raw = grad_values[q];
    if any(bitcast<vec4<u32>>(raw) != vec4<u32>(0u)) {
        grad_values[q] = vec4<f32>(0.0);
        adam_update4(q, raw, hash);
    }
}

// An entry other invocations may reach too: the first to swap in 0 applies the gradient.
fn claim(i: u32) {
    let raw = atomicExchange(&grads[i], 0u);
    atomicAnd(&visited[i >> 5u], ~(1u << (i & 31u)));
    if raw != 0u {
        adam_update(i, bitcast<f32>(raw));
    }
}
