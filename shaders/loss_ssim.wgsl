// Loss: 1 - SSIM of the rendered patches' colour against the targets (seed §1.1, SPEC §3.1), per cut,
// weighted by lambda and the cut's level weight. SSIM as Wang et al. (2004) define it, per channel,
// over every W x W window (W = loss.ssim_window) wholly inside a patch (or a structure patch, whose
// tiles join into one square: ray_loss.wgsl) and on the image, with box
// weights and the biased (1/N) moments, C1 = 0.01^2 and C2 = 0.03^2 for colours in [0, 1]:
//   SSIM = (2 mx my + C1)(2 cxy + C2) / ((mx^2 + my^2 + C1)(vx + vy + C2)).
// The value is 1 - the mean SSIM over the step's windows and the three channels (inv_windows is
// 1 / (3 windows)). Box windows, not the usual 11 x 11 Gaussian: a batch is made of small patches
// (a Gaussian of sigma 1.5 needs about 11 pixels a side), and a box window of W pixels weighs every
// pixel of a W-pixel structure equally. Each slot writes the value of the window whose top-left
// pixel it is and gathers its own gradient from every window it lies in (at most W^2 windows of
// W^2 pixels each: no atomics, no other slot's RayGrad written).

const C1: f32 = 0.0001;
const C2: f32 = 0.0009;

// The first moments and the (co)variances of a window, per channel, and whether it is whole.
struct Window {
    mx: vec3<f32>,
    my: vec3<f32>,
    vx: vec3<f32>,
    vy: vec3<f32>,
    cxy: vec3<f32>,
    whole: bool,
}

// The window whose top-left pixel is `corner` in the square `square`, at the cut whose slots start at
// `cut_first`.
fn window(square: Structure, corner: vec2<u32>, cut_first: u32) -> Window {
    let w = loss.ssim_window;
    var sx = vec3<f32>(0.0);
    var sy = vec3<f32>(0.0);
    var sxx = vec3<f32>(0.0);
    var syy = vec3<f32>(0.0);
    var sxy = vec3<f32>(0.0);
    var whole = true;
    for (var j = 0u; j < w; j++) {
        for (var i = 0u; i < w; i++) {
            let ray = structure_ray(square, corner + vec2<u32>(i, j));
            whole = whole && on_image(ray);
            let x = outputs[cut_first + ray].rgb;
            let y = rays[ray].target_rgb.xyz;
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
        }
    }
    let inv_n = 1.0 / f32(w * w);
    let mx = sx * inv_n;
    let my = sy * inv_n;
    return Window(mx, my, sxx * inv_n - mx * mx, syy * inv_n - my * my, sxy * inv_n - mx * my, whole);
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let s = ray_slot(wg, nwg, local);
    if s.index >= s.count {
        return;
    }
    let w = loss.ssim_window;
    let square = structure_of(s.ray);
    let xy = square.pixel;
    let x = outputs[s.index].rgb;
    let y = rays[s.ray].target_rgb.xyz;
    let inv_n = 1.0 / f32(w * w);
    var value = 0.0;
    var d_ssim = vec3<f32>(0.0);
    // the windows holding this pixel: top-left corners (wx, wy), wx in [x - W + 1, x] and in
    // [0, size - W] (none when the window is larger than the square)
    let last = i32(square.size) - i32(w);
    for (var wy = max(i32(xy.y) - i32(w) + 1, 0); wy <= min(i32(xy.y), last); wy++) {
        for (var wx = max(i32(xy.x) - i32(w) + 1, 0); wx <= min(i32(xy.x), last); wx++) {
            let corner = vec2<u32>(u32(wx), u32(wy));
            let m = window(square, corner, s.cut_first);
            if !m.whole {
                continue;
            }
            let a1 = 2.0 * m.mx * m.my + C1;
            let a2 = 2.0 * m.cxy + C2;
            let b1 = m.mx * m.mx + m.my * m.my + C1;
            let b2 = m.vx + m.vy + C2;
            let ssim = a1 * a2 / (b1 * b2);
            if all(corner == xy) {
                value += 3.0 - ssim.x - ssim.y - ssim.z;
            }
            // d/dx_i of the means and moments: dmx = 1/N, dvx = 2 (x_i - mx)/N, dcxy = (y_i - my)/N
            let da1 = 2.0 * m.my * inv_n;
            let da2 = 2.0 * (y - m.my) * inv_n;
            let db1 = 2.0 * m.mx * inv_n;
            let db2 = 2.0 * (x - m.mx) * inv_n;
            d_ssim += (da1 * a2 + a1 * da2) / (b1 * b2) - ssim * (db1 / b1 + db2 / b2);
        }
    }
    losses[TERM_SSIM * s.count + s.index] = value * loss.inv_windows;
    ray_grads[s.index].rgb -= d_ssim * loss.inv_windows * term_weight(TERM_SSIM, s.cut);
}
