// Pass 2b of the hierarchical and importance phases (SPEC §5): the proposal's PDF along each ray.
// The proposal is the batch's stratified samples at one coarse cut, rendered forward only (no
// gradient); bin j of ray r is the stratum of its sample j. A bin's weight is T_j alpha_j, dilated to
// the largest of its own and its two neighbours' (a coarse cut's surface may sit a bin away from the
// finer cut's), normalised, and mixed with sampling.proposal_floor of uniform (all uniform where the
// proposal has no weight). cdf[r * (n + 1) + j] is the probability before bin j: 0 at j = 0, 1 at
// j = n. The proposal's evaluated samples are counted for the statistics.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let r = flat_index(wg, nwg, local, WORKGROUP);
    if r >= batch.n_rays {
        return;
    }
    let n = batch.samples_per_ray;
    let first = r * n;
    let base = r * (n + 1u);
    // the weights, into cdf[base + 1 + j]
    var transmittance = 1.0;
    var evaluated = 0u;
    for (var j = 0u; j < n; j++) {
        var w = 0.0;
        if samples[first + j].node != NO_NODE {
            evaluated += 1u;
            let tau = max(field_out[first + j].w, 0.0) * samples[first + j].delta;
            let alpha = 1.0 - exp(-min(tau, MAX_TAU));
            w = transmittance * alpha;
            transmittance *= 1.0 - alpha;
        }
        cdf[base + 1u + j] = w;
    }
    // dilated in place (the previous and current raw weights kept aside)
    var total = 0.0;
    var previous = 0.0;
    var current = cdf[base + 1u];
    for (var j = 0u; j < n; j++) {
        var next = 0.0;
        if j + 1u < n {
            next = cdf[base + 2u + j];
        }
        let dilated = max(max(previous, current), next);
        cdf[base + 1u + j] = dilated;
        total += dilated;
        previous = current;
        current = next;
    }
    // cumulative, with the uniform share
    var floor = sampling.proposal_floor;
    var scale = 0.0;
    if total > 0.0 {
        scale = (1.0 - floor) / total;
    } else {
        floor = 1.0;
    }
    cdf[base] = 0.0;
    var sum = 0.0;
    for (var j = 0u; j < n; j++) {
        sum += cdf[base + 1u + j] * scale + floor / f32(n);
        cdf[base + 1u + j] = sum;
    }
    cdf[base + n] = 1.0;
    if evaluated > 0u {
        atomicAdd(&counters[0], evaluated);
    }
}
