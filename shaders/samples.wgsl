// Pass 2: stratified samples along each ray, each assigned its octree node by footprint (SPEC §1);
// samples in cells the occupancy grid marks empty are skipped (node NO_NODE). The others are appended
// to a dense list, in order within each workgroup, so the field passes run only on them with full lanes.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> rays: array<Ray>;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(3) var<storage, read_write> samples: array<Sample>;
// max-decayed density per cell of a grid over the cube (occupancy.wgsl)
@group(0) @binding(4) var<storage, read> occupancy: array<f32>;
@group(0) @binding(5) var<storage, read> occupancy_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> active_list: array<u32>;
// [0]: length of active_list (cleared before the pass)
@group(0) @binding(7) var<storage, read_write> active_count: array<atomic<u32>>;

var<workgroup> wg_flags: array<u32, 64>;
var<workgroup> wg_base: u32;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = flat_index(wg, nwg, local, 64u);
    let in_range = s < frame.n_rays * frame.samples_per_ray;
    var node = NO_NODE;
    if in_range {
        node = make_sample(s);
    }
    // append the active samples of this workgroup, in order, with one atomic per workgroup
    wg_flags[local] = u32(node != NO_NODE);
    workgroupBarrier();
    if local == 0u {
        var total = 0u;
        for (var k = 0u; k < 64u; k++) {
            let flag = wg_flags[k];
            wg_flags[k] = total;
            total += flag;
        }
        wg_base = atomicAdd(&active_count[0], total);
    }
    workgroupBarrier();
    if node != NO_NODE {
        active_list[wg_base + wg_flags[local]] = s;
    }
}

// Writes sample s; returns its node (NO_NODE when it is skipped).
fn make_sample(s: u32) -> u32 {
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
        // empty space: no field evaluation, alpha 0
        if frame.occ_skip != 0u {
            let threshold = min(frame.occ_threshold / sample.delta, occupancy_mean[0]);
            if occupancy[occupancy_cell(sample.pos, frame.occ_resolution)] < threshold {
                sample.node = NO_NODE;
            }
        }
    }
    samples[s] = sample;
    return sample.node;
}
