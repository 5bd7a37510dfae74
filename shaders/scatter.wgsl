// Pass 2c: the node-sorted active list: each active sample (ray samples, then probes) at its node's
// offset plus its rank.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = flat_index(wg, nwg, local, WORKGROUP);
    if s >= batch.n_rays * batch.n_cuts * batch.samples_per_ray + batch.probe_groups * PROBES_PER_GROUP {
        return;
    }
    let sample = samples[s];
    if sample.node != NO_NODE {
        active_list[node_offsets[sample.node] + sample.rank] = s;
    }
}
