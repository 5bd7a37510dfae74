// Pass 2: stratified samples along each ray, for each tree cut the batch renders (SPEC §1 "multi-scale
// outputs": slot c * n_rays + r is ray r at cut cuts[c]; the jitter depends on the ray and the sample
// only, so every cut sees the same points). Each sample takes its octree node by footprint, capped at
// the cut. Samples in cells the occupancy grid marks empty are skipped (node NO_NODE), but for a
// random few while training (sampling.explore), which keep regions the grid emptied too early
// learnable. Each other sample takes a rank among its node's samples, from which scatter.wgsl builds
// the node-sorted list the field passes run over.

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
    let cut = batch.cuts[slot / batch.n_rays];
    // the same random stream for every cut of a ray (ray_offset: the training chunk's first ray)
    let k = (r + batch.ray_offset) * batch.samples_per_ray + i;
    let ray = rays[r];
    var sample: Sample;
    sample.ray = r;
    sample.node = NO_NODE;
    if ray.far > ray.near {
        var u = 0.5;
        var v = 0.5;
        if batch.training != 0u {
            u = rand01(batch.seed, 20u, k);
            v = rand01(batch.seed, 21u, k);
        }
        let span = ray.far - ray.near;
        sample.delta = span / f32(batch.samples_per_ray);
        sample.t = ray.near + (f32(i) + u) * sample.delta;
        sample.pos = clamp(ray.origin + sample.t * ray.dir, vec3<f32>(-1.0), vec3<f32>(1.0));
        // empty space: no field evaluation, alpha 0; only the node field of the record is written (the
        // render passes read nothing else of a skipped sample)
        if sampling.skip != 0u {
            let threshold = min(sampling.threshold / sample.delta, occupancy_mean[0]);
            let explore = batch.training != 0u && rand01(batch.seed, 22u, k) < sampling.explore;
            if occupancy[occupancy_cell(sample.pos, sampling.resolution)] < threshold && !explore {
                samples[s].node = NO_NODE;
                return;
            }
        }
        let radius = sample.t * ray.pixel_radius * exp2(v - 0.5);
        sample.node = level_node(sample.pos, radius, cut);
    }
    if sample.node != NO_NODE {
        sample.rank = atomicAdd(&node_counts[sample.node], 1u);
    }
    samples[s] = sample;
}
