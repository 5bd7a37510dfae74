// Shared by every pass: the per-step uniforms, the ray and sample records, indexing and the RNG.
// The Rust mirrors live in src/gpu/records.rs; a test compares their layouts with naga's.

struct Frame {
    n_rays: u32,
    samples_per_ray: u32,
    step: u32,
    seed: u32,
    cut: u32,
    training: u32,
    patch_size: u32,
    pyramid_levels: u32,
    background_r: f32,
    background_g: f32,
    background_b: f32,
    inv_count: f32,
    lr_hash: f32,
    lr_mlp: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bias1: f32,
    bias2: f32,
    n_params: u32,
    max_density: f32,
    ray_offset: u32,
    view: u32,
    // occupancy grid cells per axis (0: no grid), skip threshold on sigma * delta, update decay
    occ_resolution: u32,
    occ_threshold: f32,
    occ_decay: f32,
    occ_skip: u32,
    // 1: training rays see a random background where the photo is transparent
    random_background: u32,
    // which of the OCC_PHASES subsets of cells this step's occupancy update visits
    occ_phase: u32,
    n_nodes: u32,
    // chance that a training sample in an empty cell is evaluated anyway (so emptied regions can return)
    occ_explore: f32,
    _pad: u32,
}

// The occupancy grid is refreshed a quarter at a time.
const OCC_PHASES: u32 = 4u;

struct Ray {
    origin: vec3<f32>,
    near: f32,
    dir: vec3<f32>,
    far: f32,
    // rgb target and the ray's weight in the loss (0 for padding rays outside the image)
    target_rgb: vec4<f32>,
    pixel_radius: f32,
    pixel: u32,
    // the background behind this ray in training, RGBA8 (see rays.wgsl)
    background: u32,
    _pad: u32,
}

struct Sample {
    pos: vec3<f32>,
    node: u32,
    t: f32,
    delta: f32,
    ray: u32,
    // place among the active samples of its node (samples.wgsl)
    rank: u32,
}

struct RayResult {
    rgb: vec3<f32>,
    opacity: f32,
    depth: f32,
    loss: f32,
    // samples of the ray that the field evaluated (not skipped as empty space)
    evaluated: f32,
    _pad: f32,
}

const NO_NODE: u32 = 0xffffffffu;

// Occupancy-grid cell holding a point of the scene cube.
fn occupancy_cell(p: vec3<f32>, res: u32) -> u32 {
    let c = min(vec3<u32>(clamp((p + vec3<f32>(1.0)) * 0.5, vec3<f32>(0.0), vec3<f32>(1.0)) * f32(res)), vec3<u32>(res - 1u));
    return c.x + res * (c.y + res * c.z);
}

fn unpack_rgb(v: u32) -> vec3<f32> {
    return vec3<f32>(f32(v & 255u), f32((v >> 8u) & 255u), f32((v >> 16u) & 255u)) * (1.0 / 255.0);
}

// Flat invocation index of a 2D dispatch (a dispatch allows at most 65535 workgroups per dimension).
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, local: u32, size: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * size + local;
}

// PCG hash: the CPU reference computes the same bits.
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// Uniform in [0, 1) from a seed, a stream and an index.
fn rand01(seed: u32, stream: u32, index: u32) -> f32 {
    let h = pcg(pcg(seed ^ (stream * 0x9e3779b9u)) ^ index);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Not-a-number and infinities become 0 (SPEC §4); counted where it matters.
fn sanitize(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x7f800000u) == 0x7f800000u {
        return 0.0;
    }
    return x;
}
