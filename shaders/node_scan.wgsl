// Pass 2b: where each node's active samples go in the node-sorted list (an exclusive prefix sum of the
// per-node counts), each node's first workgroup in the node-batched field passes (prefix sum of
// ceil(count / FIELD_WG)), the workgroup count of each parameter page's field dispatches (indirect
// arguments), and the total. One workgroup: each invocation scans a contiguous run of nodes, then the
// runs' totals are scanned in workgroup memory.

var<workgroup> run_samples: array<u32, WORKGROUP>;
var<workgroup> run_groups: array<u32, WORKGROUP>;

fn groups_of(count: u32) -> u32 {
    return (count + FIELD_WG - 1u) / FIELD_WG;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) local: u32) {
    let n = scene.n_nodes;
    let per = (n + WORKGROUP - 1u) / WORKGROUP;
    let first = min(local * per, n);
    let last = min(first + per, n);
    var samples = 0u;
    var groups = 0u;
    for (var i = first; i < last; i++) {
        let count = node_counts[i];
        samples += count;
        groups += groups_of(count);
    }
    run_samples[local] = samples;
    run_groups[local] = groups;
    workgroupBarrier();
    // inclusive scan of the runs (Hillis-Steele)
    for (var offset = 1u; offset < WORKGROUP; offset <<= 1u) {
        var add_samples = 0u;
        var add_groups = 0u;
        if local >= offset {
            add_samples = run_samples[local - offset];
            add_groups = run_groups[local - offset];
        }
        workgroupBarrier();
        run_samples[local] += add_samples;
        run_groups[local] += add_groups;
        workgroupBarrier();
    }
    var sample_offset = run_samples[local] - samples;
    var group_offset = run_groups[local] - groups;
    for (var i = first; i < last; i++) {
        let count = node_counts[i];
        node_offsets[i] = sample_offset;
        wg_first[i] = group_offset;
        sample_offset += count;
        group_offset += groups_of(count);
    }
    if local == WORKGROUP - 1u {
        wg_first[n] = run_groups[local];
        active_count[0] = run_samples[local];
    }
    storageBarrier();
    // per page: its workgroups, as x and y counts (x at most 65535)
    for (var p = local; p < scene.n_pages; p += WORKGROUP) {
        let a = p * scene.nodes_per_page;
        let b = min(a + scene.nodes_per_page, n);
        let total = wg_first[b] - wg_first[a];
        let x = min(total, 65535u);
        dispatch_args[3u * p] = x;
        dispatch_args[3u * p + 1u] = select(0u, (total + x - 1u) / max(x, 1u), x > 0u);
        dispatch_args[3u * p + 2u] = 1u;
    }
}
