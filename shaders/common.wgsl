// Shared by every pass: indexing, the RNG, colour packing, sanitising. The structs the passes share
// with the host are generated from src/gpu/records.rs (gpu_struct!) and declared before this file.

const NO_NODE: u32 = 0xffffffffu;

// Largest sigma * delta a sample's alpha sees (SPEC §4), so alpha never rounds to exactly 1.
const MAX_TAU: f32 = 30.0;

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

// Not-a-number or an infinity (SPEC §4: such values become 0 and are counted).
fn nonfinite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

fn sanitize(x: f32) -> f32 {
    return select(x, 0.0, nonfinite(x));
}
