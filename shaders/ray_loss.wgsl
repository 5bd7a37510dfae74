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
}

fn ray_slot(wg: vec3<u32>, nwg: vec3<u32>, local: u32) -> RaySlot {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    return RaySlot(index, index % batch.n_rays, index / batch.n_rays, batch.n_rays * batch.n_cuts);
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

// The ray's pixel in its patch (x, y): rays are patch by patch, row by row.
fn patch_pixel(ray: u32) -> vec2<u32> {
    let p = batch.patch_size;
    let within = ray % (p * p);
    return vec2<u32>(within % p, within / p);
}
