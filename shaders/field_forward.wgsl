// Pass 3: the field at every active sample -> (rgb, sigma). One dispatch per parameter page; every
// workgroup evaluates up to WORKGROUP samples of one node (node_groups.wgsl), whose decoders it reads
// at constant offsets (src/gpu/unrolled.rs). Non-finite outputs become 0 and are counted. With
// STORE_ACTS (train.recompute_backward = false) a training workspace's forward also stores each
// sample's activations for field_backward, at the sample's place in the node-sorted list.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let group = node_group(wg, nwg);
    let node = group.x;
    let base = (node - page.first_node) * NODE_PARAMS;
    load_weights(local, base + HASH_PARAMS);
    // lanes past the group's samples evaluate its last sample again and store nothing: no lane
    // leaves early, so the weight loads stay uniform across the workgroup
    let valid = local < group.z;
    let s = active_list[group.y + min(local, max(group.z, 1u) - 1u)];
    let sample = samples[s];
    let a = field_eval(base, node_local(nodes[node], sample.pos), rays[sample.ray].dir);
    if valid {
        let out = vec4<f32>(a.rgb, a.sigma);
        if any(vec4<bool>(nonfinite(out.x), nonfinite(out.y), nonfinite(out.z), nonfinite(out.w))) {
            atomicAdd(&sanitized[SANITIZED_FIELD], 1u);
        }
        field_out[s] = vec4<f32>(sanitize(out.x), sanitize(out.y), sanitize(out.z), sanitize(out.w));
        if STORE_ACTS {
            store_acts(group.y + local, a);
        }
    }
}
