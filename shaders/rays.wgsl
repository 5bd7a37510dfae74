// Pass 1: one ray per pixel of the batch's patches (training) or of one view (rendering). Training
// targets are streamed: the host gathers the batch's pixels (RGBA8) into `targets`, so no image needs
// to live on the device.

// Normalised image coordinates without lens distortion: Newton's method on the OpenCV model.
fn undistort(xd: vec2<f32>, k: vec4<f32>) -> vec2<f32> {
    var p = xd;
    for (var i = 0; i < 10; i++) {
        let r2 = p.x * p.x + p.y * p.y;
        let radial = 1.0 + r2 * (k.x + r2 * k.y);
        let fx = p.x * radial + 2.0 * k.z * p.x * p.y + k.w * (r2 + 2.0 * p.x * p.x) - xd.x;
        let fy = p.y * radial + k.z * (r2 + 2.0 * p.y * p.y) + 2.0 * k.w * p.x * p.y - xd.y;
        let dradial = k.x + 2.0 * r2 * k.y; // d(radial)/d(r2)
        let fx_x = radial + 2.0 * p.x * p.x * dradial + 2.0 * k.z * p.y + 6.0 * k.w * p.x;
        let fx_y = 2.0 * p.x * p.y * dradial + 2.0 * k.z * p.x + 2.0 * k.w * p.y;
        let fy_x = 2.0 * p.x * p.y * dradial + 2.0 * k.z * p.x + 2.0 * k.w * p.y;
        let fy_y = radial + 2.0 * p.y * p.y * dradial + 6.0 * k.z * p.y + 2.0 * k.w * p.x;
        let det = fx_x * fy_y - fx_y * fy_x;
        if abs(det) < 1e-12 {
            break;
        }
        p -= vec2<f32>(fx * fy_y - fy * fx_y, fy * fx_x - fx * fy_x) / det;
    }
    return p;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let r = flat_index(wg, nwg, local, WORKGROUP);
    if r >= batch.n_rays {
        return;
    }
    var view: u32;
    var level: u32;
    var px: u32;
    var py: u32;
    if batch.training != 0u {
        let per_patch = batch.patch_size * batch.patch_size;
        let tile = patches[r / per_patch];
        let within = r % per_patch;
        view = tile.view;
        level = tile.level;
        px = tile.x0 + within % batch.patch_size;
        py = tile.y0 + within / batch.patch_size;
    } else {
        view = batch.view;
        level = 0u;
        let pixel = r + batch.ray_offset;
        px = pixel % cameras[view].width;
        py = pixel / cameras[view].width;
    }
    let cam = cameras[view];
    let width = cam.width >> level;
    let height = cam.height >> level;
    var ray: Ray;
    ray.pixel = py * width + px;
    let inside = px < width && py < height;
    var jitter = vec2<f32>(0.5, 0.5);
    if batch.training != 0u {
        // random streams by the ray's index in the whole step (ray_offset: the chunk's first ray)
        let g = r + batch.ray_offset;
        jitter = vec2<f32>(rand01(batch.seed, 10u, g), rand01(batch.seed, 11u, g));
    }
    let scale = 1.0 / f32(1u << level);
    let k = cam.intrinsics * scale;
    var xy = vec2<f32>((f32(px) + jitter.x - k.z) / k.x, (f32(py) + jitter.y - k.w) / k.y);
    if any(cam.distortion != vec4<f32>(0.0)) {
        xy = undistort(xy, cam.distortion);
    }
    let d_cam = vec3<f32>(xy.x, -xy.y, -1.0);
    let d = normalize(vec3<f32>(dot(cam.rows[0].xyz, d_cam), dot(cam.rows[1].xyz, d_cam), dot(cam.rows[2].xyz, d_cam)));
    let o = vec3<f32>(cam.rows[0].w, cam.rows[1].w, cam.rows[2].w);
    ray.origin = o;
    ray.dir = d;
    ray.pixel_radius = 0.5 / k.x;
    // slab intersection with the scene cube [-1,1]^3
    let inv = 1.0 / d;
    let t0 = (vec3<f32>(-1.0) - o) * inv;
    let t1 = (vec3<f32>(1.0) - o) * inv;
    let tmin = max(max(min(t0.x, t1.x), min(t0.y, t1.y)), min(t0.z, t1.z));
    let tmax = min(min(max(t0.x, t1.x), max(t0.y, t1.y)), max(t0.z, t1.z));
    ray.near = max(tmin, 0.0);
    ray.far = max(tmax, ray.near);
    ray.target_rgb = vec4<f32>(0.0);
    ray.background = 0u;
    if inside && batch.training != 0u {
        let packed = targets[r];
        var target_rgb = unpack_rgb(packed);
        if batch.random_background != 0u {
            // the photo was composited on batch.background; swap in a random one behind its transparent part,
            // so empty space must be learned as empty rather than painted in the background colour
            let g = r + batch.ray_offset;
            let bg = vec3<u32>(pcg(batch.seed ^ (3u * g)) & 255u, pcg(batch.seed ^ (3u * g + 1u)) & 255u, pcg(batch.seed ^ (3u * g + 2u)) & 255u);
            ray.background = bg.x | (bg.y << 8u) | (bg.z << 16u);
            let transparency = 1.0 - f32(packed >> 24u) * (1.0 / 255.0);
            let frame_bg = batch.background;
            target_rgb += (unpack_rgb(ray.background) - frame_bg) * transparency;
        }
        ray.target_rgb = vec4<f32>(target_rgb, 1.0);
    }
    if !inside {
        ray.far = ray.near;
    }
    rays[r] = ray;
}
