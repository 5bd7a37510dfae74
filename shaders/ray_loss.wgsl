// The losses on rendered rays (loss_mse, loss_tv, loss_ssim, loss_depth_consistency), bound alike
// (`ray_loss!` in src/kernels.rs): one invocation per slot, slot = cut * n_rays + ray. Each pass adds
// its gradient to its slots' RayGrads (never another slot's: a pass that couples slots gathers) and
// writes its value per slot to its row of `losses`.

struct RaySlot {
    // the slot: cut * n_rays + ray
    index: u32,
    ray: u32,
    cut: u32,
    // slots of the step (n_rays * n_cuts): a term's row in `losses` is term * count .. (term + 1) * count
    count: u32,
    // the first slot of its cut (ray r of this cut is slot cut_first + r)
    cut_first: u32,
}

fn ray_slot(wg: vec3<u32>, nwg: vec3<u32>, local: u32) -> RaySlot {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    let ray = index % batch.n_rays;
    return RaySlot(index, ray, index / batch.n_rays, batch.n_rays * batch.n_cuts, index - ray);
}

// Term t's weight at this step (lambda x schedule x balancer).
fn term_lambda(term: u32) -> f32 {
    return loss.lambdas[term / 4u][term % 4u];
}

// Term t's weight for a slot of cut `cut`: times the cut's level weight.
fn term_weight(term: u32, cut: u32) -> f32 {
    return term_lambda(term) * loss.cut_weights[cut];
}

// Whether the ray has a target pixel (a patch may run past a small image's edge).
fn on_image(ray: u32) -> bool {
    return rays[ray].target_rgb.w > 0.0;
}

// The square of pixels a training ray belongs to, for the losses on image structure: a patch, or a
// group of tiles (a structure patch, train.structure_patches). Rays are patch by patch (tile by tile),
// each row by row.
struct Structure {
    // the ray's pixel in the square
    pixel: vec2<u32>,
    // the square's edge in pixels
    size: u32,
    // the square's first patch (tile)
    first_patch: u32,
    // tiles per side (1 for a lone patch)
    tiles: u32,
}

fn structure_of(ray: u32) -> Structure {
    let p = batch.patch_size;
    let patch_index = ray / (p * p);
    let within = ray % (p * p);
    let pixel = vec2<u32>(within % p, within / p);
    if patch_index >= batch.grouped_patches {
        return Structure(pixel, p, patch_index, 1u);
    }
    let m = batch.group_tiles;
    let tile = patch_index % (m * m);
    let tile_xy = vec2<u32>(tile % m, tile / m);
    return Structure(tile_xy * p + pixel, m * p, patch_index - tile, m);
}

// The ray at pixel `pixel` of the square `s`.
fn structure_ray(s: Structure, pixel: vec2<u32>) -> u32 {
    let p = batch.patch_size;
    let tile = (pixel.y / p) * s.tiles + pixel.x / p;
    return (s.first_patch + tile) * p * p + (pixel.y % p) * p + pixel.x % p;
}

// The ray at pixel `pixel` of the chunk's structure patch `square` (they come first in a chunk).
fn square_ray(square: u32, pixel: vec2<u32>) -> u32 {
    let m = batch.group_tiles;
    return structure_ray(Structure(vec2<u32>(0u), m * batch.patch_size, square * m * m, m), pixel);
}
