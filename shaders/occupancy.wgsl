// Occupancy-grid update (SPEC §5): a cell takes the density at a random point inside it, from the
// deepest node there, and keeps the maximum of that and its decayed old value. Each update visits one
// of OCC_PHASES interleaved subsets of the cells (sampling.phase picks which), to spread the cost.
// One dispatch per parameter page; the host lists once, per phase, the cells of each node (the grid's
// cells never straddle a node) in groups of at most WORKGROUP cells of one node, so a workgroup reads
// one node's decoders.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    // (node, first index in occ_cells, cells); an x by y dispatch (x at most 65535) may run past this
    // (phase, page)'s groups (occ_group_base ends with the total): those workgroups update no cell
    let k = sampling.phase * scene.n_pages + page.index;
    let index = occ_group_base[k] + wg.y * nwg.x + wg.x;
    let listed = occ_groups[min(index, arrayLength(&occ_groups) - 1u)];
    let group = select(vec4<u32>(page.first_node, 0u, 0u, 0u), listed, index < occ_group_base[k + 1u]);
    let node = group.x;
    let base = (node - page.first_node) * NODE_PARAMS;
    load_weights(local, base + HASH_PARAMS);
    let cell = occ_cells[group.y + min(local, max(group.z, 1u) - 1u)];
    let res = sampling.resolution;
    let c = vec3<u32>(cell % res, (cell / res) % res, cell / (res * res));
    let jitter = vec3<f32>(rand01(sampling.seed, 30u, cell), rand01(sampling.seed, 31u, cell), rand01(sampling.seed, 32u, cell));
    let pos = (vec3<f32>(c) + jitter) * (2.0 / f32(res)) - vec3<f32>(1.0);
    let raw = field_density(base, node_local(nodes[node], pos));
    if local < group.z {
        if nonfinite(raw) {
            atomicAdd(&sanitized[SANITIZED_OCCUPANCY], 1u);
        }
        occupancy[cell] = max(occupancy[cell] * sampling.decay, sanitize(raw));
    }
}
