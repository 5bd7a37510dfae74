// Pass 2: stratified samples along each ray, each assigned its octree node by footprint (SPEC §1);
// samples in cells the occupancy grid marks empty are skipped (node NO_NODE), but for a random few while
// training (frame.occ_explore), which keep regions the grid emptied too early learnable. Each other sample takes
// a rank among its node's samples, from which scatter_samples.wgsl builds the node-sorted list that
// the field passes run over (one dispatch per node, with full lanes and the node's weights uniform).

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> rays: array<Ray>;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(3) var<storage, read_write> samples: array<Sample>;
// max-decayed density per cell of a grid over the cube (occupancy.wgsl)
@group(0) @binding(4) var<storage, read> occupancy: array<f32>;
@group(0) @binding(5) var<storage, read> occupancy_mean: array<f32>;
// active samples per node (cleared before the pass)
@group(0) @binding(7) var<storage, read_write> node_counts: array<atomic<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = flat_index(wg, nwg, local, 64u);
    if s < frame.n_rays * frame.samples_per_ray {
        make_sample(s);
    }
}

// Writes sample s (node NO_NODE when it is skipped).
fn make_sample(s: u32) {
    let r = s / frame.samples_per_ray;
    let i = s % frame.samples_per_ray;
    let ray = rays[r];
    var sample: Sample;
    sample.ray = r;
    sample.node = NO_NODE;
    if ray.far > ray.near {
        var u = 0.5;
        var v = 0.5;
        if frame.training != 0u {
            u = rand01(frame.seed, 20u, s);
            v = rand01(frame.seed, 21u, s);
        }
        let span = ray.far - ray.near;
        sample.delta = span / f32(frame.samples_per_ray);
        sample.t = ray.near + (f32(i) + u) * sample.delta;
        sample.pos = clamp(ray.origin + sample.t * ray.dir, vec3<f32>(-1.0), vec3<f32>(1.0));
        // empty space: no field evaluation, alpha 0; only the node field of the record is written (the
        // render pass reads nothing else of a skipped sample)
        if frame.occ_skip != 0u {
            let threshold = min(frame.occ_threshold / sample.delta, occupancy_mean[0]);
            let explore = frame.training != 0u && rand01(frame.seed, 22u, s) < frame.occ_explore;
            if occupancy[occupancy_cell(sample.pos, frame.occ_resolution)] < threshold && !explore {
                samples[s].node = NO_NODE;
                return;
            }
        }
        let radius = sample.t * ray.pixel_radius * exp2(v - 0.5);
        sample.node = level_node(sample.pos, radius, frame.cut);
    }
    if sample.node != NO_NODE {
        sample.rank = atomicAdd(&node_counts[sample.node], 1u);
    }
    samples[s] = sample;
}
