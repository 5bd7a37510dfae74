// Pass 2: stratified samples along each ray, each assigned its octree node by footprint (SPEC §1).

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> rays: array<Ray>;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(3) var<storage, read_write> samples: array<Sample>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = flat_index(wg, nwg, local, 64u);
    if s >= frame.n_rays * frame.samples_per_ray {
        return;
    }
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
        let radius = sample.t * ray.pixel_radius * exp2(v - 0.5);
        sample.node = level_node(sample.pos, radius, frame.cut);
    }
    samples[s] = sample;
}
