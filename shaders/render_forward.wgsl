// Pass 4: volume rendering (SPEC §2) of every slot (a ray at one tree cut): colour over the background,
// opacity, expected depth, the count of evaluated samples, and the node of the sample of largest weight
// (the first on ties; -1 when no weight is positive) for the viewer's level map and node picking.
// alpha = 1 - exp(-sigma * delta) with sigma * delta clamped (SPEC §4), so alpha never rounds to exactly 1.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let slot = flat_index(wg, nwg, local, WORKGROUP);
    if slot >= batch.n_rays * batch.n_cuts {
        return;
    }
    let n = batch.samples_per_ray;
    let first = slot * n;
    var transmittance = 1.0;
    var rgb = vec3<f32>(0.0);
    var depth = 0.0;
    var evaluated = 0u;
    var node = -1.0;
    var max_w = 0.0;
    for (var i = 0u; i < n; i++) {
        // skipped samples are empty space (alpha 0); of their record only the node is current
        if samples[first + i].node == NO_NODE {
            continue;
        }
        let sample = samples[first + i];
        let f = field_out[first + i];
        evaluated += 1u;
        let alpha = 1.0 - exp(-min(f.w * sample.delta, MAX_TAU));
        let w = transmittance * alpha;
        if w > max_w {
            max_w = w;
            node = f32(sample.node);
        }
        rgb += w * f.xyz;
        depth += w * sample.t;
        transmittance *= 1.0 - alpha;
    }
    var out: RayOutput;
    out.rgb = rgb + transmittance * ray_background(slot % batch.n_rays);
    out.opacity = 1.0 - transmittance;
    out.depth = depth;
    out.evaluated = f32(evaluated);
    out.node = node;
    outputs[slot] = out;
}

// The background behind ray r: random per ray in training where the photos have alpha (rays.wgsl).
fn ray_background(r: u32) -> vec3<f32> {
    if batch.training != 0u && batch.random_background != 0u {
        return unpack_rgb(rays[r].background);
    }
    return batch.background;
}
