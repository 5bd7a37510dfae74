// Pass 2: stratified samples along each ray, for each tree cut the batch renders (SPEC §1 "multi-scale
// outputs": slot c * n_rays + r is ray r at cut cuts[c]; the jitter depends on the ray and the sample
// only, so every cut sees the same points). Nodes, skipping of empty cells and ranks: place_sample.
// In the hierarchical and importance phases (SPEC §5) this pass makes the proposal's samples (one
// coarse cut) and resample.wgsl the trained ones.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = flat_index(wg, nwg, local, WORKGROUP);
    if s < batch.n_rays * batch.n_cuts * batch.samples_per_ray {
        make_sample(s);
    }
}

// Writes sample s (node NO_NODE when it is skipped).
fn make_sample(s: u32) {
    let slot = s / batch.samples_per_ray;
    let i = s % batch.samples_per_ray;
    let r = slot % batch.n_rays;
    // the same random stream for every cut of a ray (ray_offset: the training chunk's first ray)
    let k = (r + batch.ray_offset) * batch.samples_per_ray + i;
    let ray = rays[r];
    var sample: Sample;
    sample.ray = r;
    sample.node = NO_NODE;
    if ray.far <= ray.near {
        samples[s] = sample;
        return;
    }
    var u = 0.5;
    if batch.training != 0u {
        u = rand01(batch.seed, 20u, k);
    }
    sample.delta = (ray.far - ray.near) / f32(batch.samples_per_ray);
    sample.t = ray.near + (f32(i) + u) * sample.delta;
    sample.pos = clamp(ray.origin + sample.t * ray.dir, vec3<f32>(-1.0), vec3<f32>(1.0));
    place_sample(s, sample, k, batch.cuts[slot / batch.n_rays]);
}
