// Pass 2 of the hierarchical and importance phases (SPEC §5): each ray's samples drawn from its
// proposal's PDF (proposal_cdf.wgsl) by inverse CDF. Edge j of a ray is the inverse CDF at
// u_j = (j - 1/2 + xi_j) / n (xi_j jittered in training, 1/2 when rendering), edge 0 the ray's near and
// edge n its far; sample i is the middle of edges i and i + 1 and delta their distance, so a ray's
// samples tile it, short where the proposal puts its weight. Every cut of a ray gets the same points.
// Nodes, skipping of empty cells (the importance phase) and ranks: place_sample.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = flat_index(wg, nwg, local, WORKGROUP);
    if s < batch.n_rays * batch.n_cuts * batch.samples_per_ray {
        resample(s);
    }
}

fn resample(s: u32) {
    let n = batch.samples_per_ray;
    let slot = s / n;
    let i = s % n;
    let r = slot % batch.n_rays;
    let ray = rays[r];
    var sample: Sample;
    sample.ray = r;
    sample.node = NO_NODE;
    if ray.far <= ray.near {
        samples[s] = sample;
        return;
    }
    let t0 = edge(r, i);
    let t1 = edge(r, i + 1u);
    sample.t = 0.5 * (t0 + t1);
    sample.delta = t1 - t0;
    sample.pos = clamp(ray.origin + sample.t * ray.dir, vec3<f32>(-1.0), vec3<f32>(1.0));
    place_sample(s, sample, (r + batch.ray_offset) * n + i, batch.cuts[slot / batch.n_rays]);
}

// Edge j of ray r's resampled intervals.
fn edge(r: u32, j: u32) -> f32 {
    let ray = rays[r];
    let n = batch.samples_per_ray;
    if j == 0u {
        return ray.near;
    }
    if j >= n {
        return ray.far;
    }
    var xi = 0.5;
    if batch.training != 0u {
        xi = rand01(batch.seed, 23u, (r + batch.ray_offset) * (n + 1u) + j);
    }
    let u = (f32(j) - 0.5 + xi) / f32(n);
    // the proposal's bin holding u: cdf[lo] <= u < cdf[hi] (cdf[0] = 0 <= u < 1 = cdf[m])
    let m = proposal.samples_per_ray;
    let base = r * (m + 1u);
    var lo = 0u;
    var hi = m;
    while hi - lo > 1u {
        let mid = (lo + hi) / 2u;
        if cdf[base + mid] <= u {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let c0 = cdf[base + lo];
    let within = clamp((u - c0) / max(cdf[base + lo + 1u] - c0, 1e-12), 0.0, 1.0);
    return ray.near + (f32(lo) + within) * (ray.far - ray.near) / f32(m);
}
