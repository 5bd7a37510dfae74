// The node-batched field passes (forward, backward) run as one dispatch per parameter page over the
// active samples, sorted by node (node_scan.wgsl, scatter.wgsl): every workgroup takes up to
// WORKGROUP samples of one node, so the node's weights are the same for the whole workgroup.
// wg_first[n] is the first workgroup of node n (an exclusive prefix sum over all nodes).

// (node, first index in active_list, samples) of workgroup `wg` of this page's dispatch.
fn node_group(wg: vec3<u32>, nwg: vec3<u32>) -> vec3<u32> {
    let group = wg_first[page.first_node] + wg.y * nwg.x + wg.x;
    // an x by y dispatch (x at most 65535) may run past the page's last workgroup: those take no samples
    if group >= wg_first[page.first_node + page.n_nodes] {
        return vec3<u32>(page.first_node, node_offsets[page.first_node], 0u);
    }
    // the last node of the page whose first workgroup is at or before this one (nodes without
    // samples share their successor's first workgroup, so they are never chosen)
    var lo = page.first_node;
    var hi = page.first_node + page.n_nodes;
    while hi - lo > 1u {
        let mid = (lo + hi) / 2u;
        if wg_first[mid] <= group {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let within = (group - wg_first[lo]) * WORKGROUP;
    return vec3<u32>(lo, node_offsets[lo] + within, min(node_counts[lo] - within, WORKGROUP));
}

// Which entries of a node the workgroups that take its samples own, for the passes that visit each
// entry with a gradient once (adam_nodes, grad_norm): the node's first workgroup owns the decoders; a
// node whose samples touch at least as many hash entries as its tables hold vec4s ("dense": a shallow
// tree's nodes; FieldLayout::dense_samples) has its tables shared out among its workgroups
// (`dense_share`), a vec4 at a time; in a sparse node each invocation takes its sample's corners.
fn node_dense(node: u32) -> bool {
    return node_counts[node] >= DENSE_SAMPLES;
}

// The workgroup's place among those of its node (`group` from node_group).
fn group_index(group: vec3<u32>) -> u32 {
    return (group.y - node_offsets[group.x]) / WORKGROUP;
}

// The range [x, y) of a dense node's table entries that its workgroup `index` sweeps.
fn dense_share(node: u32, index: u32) -> vec2<u32> {
    let groups = wg_first[node + 1u] - wg_first[node];
    // in whole quads (HASH_PARAMS and a node's block start are multiples of 4): the sweeps read vec4s
    let share = ((HASH_PARAMS / 4u + groups - 1u) / groups) * 4u;
    return vec2<u32>(min(index * share, HASH_PARAMS), min((index + 1u) * share, HASH_PARAMS));
}
