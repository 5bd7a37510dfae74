// Pass 7a (SPEC §4): the statistics of the step's gradient over one page's nodes with samples, for the
// global norm the guard clips by and watches. It visits exactly the entries adam_nodes will update,
// split the same way (the node's first workgroup takes the decoders, a dense node's workgroups share
// its tables, a sparse node's invocations take their sample's corners). A sparse node's entry may be
// the corner of several samples: the invocation that sets its bit in `visited` first counts it, and
// adam_nodes clears the bit when it claims the entry. Gradients are only read here.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let group = node_group(wg, nwg);
    let node = group.x;
    let base = (node - page.first_node) * NODE_PARAMS;
    let index = group_index(group);
    var acc: GradAcc;
    // workgroups past the page's last one take nothing (group.z == 0)
    if group.z > 0u {
        // without branches (the sweeps read every entry): a zero gradient adds nothing but to the
        // count, which skips it; a non-finite one is counted at the end
        var bad = 0u;
        if index == 0u {
            // the decoders, a vec4 at a time (HASH_PARAMS and MLP_PARAMS are whole vec4s)
            for (var q = local; q < MLP_PARAMS / 4u; q += WORKGROUP) {
                let g = grads[(base + HASH_PARAMS) / 4u + q];
                let bits = bitcast<vec4<u32>>(g);
                let finite = finite_quad(bits);
                let v = select(vec4<f32>(0.0), g, finite);
                let counted = finite & (bits != vec4<u32>(0u));
                let colour = vec4<u32>(HASH_PARAMS + 4u * q) + vec4<u32>(0u, 1u, 2u, 3u) >= vec4<u32>(COLOUR_START);
                acc.density = grad_add_quad(acc.density, select(v, vec4<f32>(0.0), colour), counted & !colour);
                acc.colour = grad_add_quad(acc.colour, select(vec4<f32>(0.0), v, colour), counted & colour);
                bad += dot(select(vec4<u32>(1u), vec4<u32>(0u), finite), vec4<u32>(1u));
            }
        }
        if node_dense(node) {
            let share = dense_share(node, index);
            for (var q = (share.x >> 2u) + local; q < (share.y >> 2u); q += WORKGROUP) {
                let g = grads[(base >> 2u) + q];
                let bits = bitcast<vec4<u32>>(g);
                let finite = finite_quad(bits);
                acc.hash = grad_add_quad(acc.hash, select(vec4<f32>(0.0), g, finite), finite & (bits != vec4<u32>(0u)));
                bad += dot(select(vec4<u32>(1u), vec4<u32>(0u), finite), vec4<u32>(1u));
            }
        } else if local < group.z {
            let local_pos = node_local(nodes[node], samples[active_list[group.y + local]].pos);
            for (var l = 0u; l < HASH_LEVELS; l++) {
                let cell = grid_cell(l, local_pos);
                for (var c = 0u; c < 8u; c++) {
                    let idx = base + hash_index(l, cell.xyz + corner_offset(c));
                    visit(&acc, idx);
                    visit(&acc, idx + 1u);
                }
            }
        }
        if bad > 0u {
            atomicAdd(&grad_max[GRAD_TENSORS], bad);
        }
    }
    grad_acc_flush(acc, local, (wg.y * nwg.x + wg.x) % GRAD_SLOTS);
}

// A hash entry other invocations may reach too: counted by the first to mark it.
fn visit(acc: ptr<function, GradAcc>, i: u32) {
    let bit = 1u << (i & 31u);
    if (atomicOr(&visited[i >> 5u], bit) & bit) == 0u {
        let g = grads[i >> 2u][i & 3u];
        if bitcast<u32>(g) != 0u {
            grad_acc_hash(acc, g);
        }
    }
}
