// The multiresolution hash grid of one node (SPEC §1): which table entries a node-local point reads,
// and with what weights. Shared by the field passes and by Adam's per-sample update (adam_hash.wgsl).

// Entry of corner c in a node's tables (level after level, TABLE_SIZE entries each).
fn hash_entry(l: u32, c: vec3<u32>) -> u32 {
    let res = level_resolution(l);
    var i: u32;
    if level_dense(l) {
        let n = res + 1u;
        i = c.x + n * (c.y + n * c.z);
    } else {
        i = (c.x ^ (c.y * 2654435761u) ^ (c.z * 805459861u)) & (TABLE_SIZE - 1u);
    }
    return l * TABLE_SIZE + i;
}

// Offset of corner c's two features inside a node's hash block.
fn hash_index(l: u32, c: vec3<u32>) -> u32 {
    return hash_entry(l, c) * 2u;
}

// Cell of level l holding `local`, and the position inside it.
fn grid_cell(l: u32, local: vec3<f32>) -> vec4<u32> {
    let res = level_resolution(l);
    let pg = clamp(local, vec3<f32>(0.0), vec3<f32>(1.0)) * f32(res);
    let cell = min(vec3<u32>(floor(pg)), vec3<u32>(res - 1u));
    return vec4<u32>(cell, res);
}

fn corner_weight(c: u32, f: vec3<f32>) -> f32 {
    let wx = select(1.0 - f.x, f.x, (c & 1u) != 0u);
    let wy = select(1.0 - f.y, f.y, (c & 2u) != 0u);
    let wz = select(1.0 - f.z, f.z, (c & 4u) != 0u);
    return wx * wy * wz;
}

fn corner_offset(c: u32) -> vec3<u32> {
    return vec3<u32>(c & 1u, (c >> 1u) & 1u, (c >> 2u) & 1u);
}
