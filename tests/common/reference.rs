//! CPU references of every WGSL pass, in plain Rust (f64 where it helps). Tests only: this is the
//! specification the kernels must match.

#![allow(dead_code)]
// Index loops mirror the kernels line by line; the SH constants are written as the kernels write them.
#![allow(clippy::needless_range_loop, clippy::excessive_precision)]

use infnerf::field::FieldLayout;
use infnerf::gpu::records::{Frame, GpuCamera, Patch, Ray, RayResult, Sample};
use infnerf::octree::Octree;

pub const NO_NODE: u32 = u32::MAX;
pub const MAX_TAU: f64 = 30.0;

pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

pub fn rand01(seed: u32, stream: u32, index: u32) -> f32 {
    let h = pcg(pcg(seed ^ stream.wrapping_mul(0x9e3779b9)) ^ index);
    (h >> 8) as f32 * (1.0 / 16777216.0)
}

pub fn undistort_for_test(xd: [f64; 2], k: [f64; 4]) -> [f64; 2] {
    undistort(xd, k)
}

fn undistort(xd: [f64; 2], k: [f64; 4]) -> [f64; 2] {
    let mut p = xd;
    for _ in 0..10 {
        let (x, y) = (p[0], p[1]);
        let r2 = x * x + y * y;
        let radial = 1.0 + r2 * (k[0] + r2 * k[1]);
        let fx = x * radial + 2.0 * k[2] * x * y + k[3] * (r2 + 2.0 * x * x) - xd[0];
        let fy = y * radial + k[2] * (r2 + 2.0 * y * y) + 2.0 * k[3] * x * y - xd[1];
        let dr = k[0] + 2.0 * r2 * k[1];
        let fx_x = radial + 2.0 * x * x * dr + 2.0 * k[2] * y + 6.0 * k[3] * x;
        let fx_y = 2.0 * x * y * dr + 2.0 * k[2] * x + 2.0 * k[3] * y;
        let fy_x = fx_y;
        let fy_y = radial + 2.0 * y * y * dr + 6.0 * k[2] * y + 2.0 * k[3] * x;
        let det = fx_x * fy_y - fx_y * fy_x;
        if det.abs() < 1e-12 {
            break;
        }
        p = [x - (fx * fy_y - fy * fx_y) / det, y - (fy * fx_x - fx * fy_x) / det];
    }
    p
}

/// Forward OpenCV distortion, to check `undistort` inverts it.
pub fn distort(p: [f64; 2], k: [f64; 4]) -> [f64; 2] {
    let (x, y) = (p[0], p[1]);
    let r2 = x * x + y * y;
    let radial = 1.0 + r2 * (k[0] + r2 * k[1]);
    [
        x * radial + 2.0 * k[2] * x * y + k[3] * (r2 + 2.0 * x * x),
        y * radial + k[2] * (r2 + 2.0 * y * y) + 2.0 * k[3] * x * y,
    ]
}

fn unpack(v: u32) -> [f32; 3] {
    [(v & 255) as f32 / 255.0, ((v >> 8) & 255) as f32 / 255.0, ((v >> 16) & 255) as f32 / 255.0]
}

/// rays.wgsl
pub fn rays(frame: &Frame, cameras: &[GpuCamera], patches: &[Patch], offsets: &[u32], pixels: &[u32]) -> Vec<Ray> {
    (0..frame.n_rays)
        .map(|r| {
            let (view, level, px, py) = if frame.training != 0 {
                let per = frame.patch_size * frame.patch_size;
                let p = patches[(r / per) as usize];
                let w = r % per;
                (p.view, p.level, p.x0 + w % frame.patch_size, p.y0 + w / frame.patch_size)
            } else {
                let pixel = r + frame.ray_offset;
                let c = &cameras[frame.view as usize];
                (frame.view, 0, pixel % c.width, pixel / c.width)
            };
            let cam = &cameras[view as usize];
            let (width, height) = (cam.width >> level, cam.height >> level);
            let inside = px < width && py < height;
            let jitter = if frame.training != 0 {
                [rand01(frame.seed, 10, r) as f64, rand01(frame.seed, 11, r) as f64]
            } else {
                [0.5, 0.5]
            };
            let scale = 1.0 / f64::from(1u32 << level);
            let k: Vec<f64> = cam.intrinsics.iter().map(|&v| f64::from(v) * scale).collect();
            let mut xy = [(f64::from(px) + jitter[0] - k[2]) / k[0], (f64::from(py) + jitter[1] - k[3]) / k[1]];
            if cam.distortion.iter().any(|&d| d != 0.0) {
                xy = undistort(xy, cam.distortion.map(f64::from));
            }
            let dc = [xy[0], -xy[1], -1.0];
            let mut d = [0.0; 3];
            for i in 0..3 {
                d[i] = (0..3).map(|j| f64::from(cam.rows[i][j]) * dc[j]).sum();
            }
            let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            let d = d.map(|v| v / n);
            let o = [0, 1, 2].map(|i| f64::from(cam.rows[i][3]));
            let (mut tmin, mut tmax) = (f64::NEG_INFINITY, f64::INFINITY);
            for i in 0..3 {
                let t0 = (-1.0 - o[i]) / d[i];
                let t1 = (1.0 - o[i]) / d[i];
                tmin = tmin.max(t0.min(t1));
                tmax = tmax.min(t0.max(t1));
            }
            let near = tmin.max(0.0);
            let mut far = tmax.max(near);
            let mut target = [0.0; 4];
            let mut background = 0;
            if inside && frame.training != 0 {
                let off = offsets[(view * frame.pyramid_levels + level) as usize];
                let packed = pixels[(off + py * width + px) as usize];
                let mut c = unpack(packed);
                if frame.random_background != 0 {
                    let bg = [0, 1, 2].map(|k| pcg(frame.seed ^ (3 * r + k)) & 255);
                    background = bg[0] | (bg[1] << 8) | (bg[2] << 16);
                    let transparency = 1.0 - (packed >> 24) as f32 * (1.0 / 255.0);
                    let new_bg = unpack(background);
                    for k in 0..3 {
                        c[k] += (new_bg[k] - frame.background[k]) * transparency;
                    }
                }
                target = [c[0], c[1], c[2], 1.0];
            }
            if !inside {
                far = near;
            }
            Ray {
                origin: o.map(|v| v as f32),
                near: near as f32,
                dir: d.map(|v| v as f32),
                far: far as f32,
                target_rgb: target,
                pixel_radius: (0.5 / k[0]) as f32,
                pixel: py * width + px,
                background,
                _pad: 0,
            }
        })
        .collect()
}

/// samples.wgsl (f32 arithmetic in the same order, so node choices match exactly)
pub fn samples(frame: &Frame, rays: &[Ray], octree: &Octree, occupancy: &[f32], occupancy_mean: f32) -> Vec<Sample> {
    let n = frame.samples_per_ray;
    (0..frame.n_rays * n)
        .map(|s| {
            let r = s / n;
            let i = s % n;
            let ray = &rays[r as usize];
            let mut sample = Sample { ray: r, node: NO_NODE, ..Default::default() };
            if ray.far > ray.near {
                let (u, v) = if frame.training != 0 {
                    (rand01(frame.seed, 20, s), rand01(frame.seed, 21, s))
                } else {
                    (0.5, 0.5)
                };
                sample.delta = (ray.far - ray.near) / n as f32;
                sample.t = ray.near + (i as f32 + u) * sample.delta;
                sample.pos = [0, 1, 2].map(|k| (ray.origin[k] + sample.t * ray.dir[k]).clamp(-1.0, 1.0));
                let radius = sample.t * ray.pixel_radius * (v - 0.5).exp2();
                sample.node = octree.level_node(sample.pos, radius, frame.cut);
                if frame.occ_skip != 0 {
                    let threshold = (frame.occ_threshold / sample.delta).min(occupancy_mean);
                    let explore = frame.training != 0 && rand01(frame.seed, 22, s) < frame.occ_explore;
                    if occupancy[occupancy_cell(sample.pos, frame.occ_resolution)] < threshold && !explore {
                        sample.node = NO_NODE;
                    }
                }
            }
            sample
        })
        .collect()
}

/// common.wgsl's occupancy_cell: the index of the grid cell (of `res`^3 over the cube) holding `pos`.
pub fn occupancy_cell(pos: [f32; 3], res: u32) -> usize {
    let cell = pos.map(|p| ((((p + 1.0) * 0.5).clamp(0.0, 1.0) * res as f32) as u32).min(res - 1));
    (cell[0] + res * (cell[1] + res * cell[2])) as usize
}

/// Intermediate values of one field evaluation.
#[derive(Clone, Debug, Default)]
pub struct Acts {
    pub in1: Vec<f64>,
    pub pre1: Vec<f64>,
    pub out1: Vec<f64>,
    pub in3: Vec<f64>,
    pub pre3: Vec<f64>,
    pub out4: [f64; 3],
    pub rgb: [f64; 3],
    pub sigma: f64,
}

pub fn hash_index(layout: &FieldLayout, l: usize, c: [u32; 3]) -> usize {
    let res = layout.resolutions[l];
    let i = if layout.level_dense(l) {
        let n = res + 1;
        c[0] + n * (c[1] + n * c[2])
    } else {
        (c[0] ^ c[1].wrapping_mul(2654435761) ^ c[2].wrapping_mul(805459861)) & (layout.table_size - 1)
    };
    ((l as u32 * layout.table_size + i) * 2) as usize
}

/// For each level: (corner parameter offsets, corner weights).
pub fn corners(layout: &FieldLayout, local: [f64; 3]) -> Vec<([usize; 8], [f64; 8])> {
    (0..layout.hash_levels as usize)
        .map(|l| {
            let res = layout.resolutions[l];
            let pg = local.map(|v| v.clamp(0.0, 1.0) * f64::from(res));
            let cell = pg.map(|v| (v.floor() as u32).min(res - 1));
            let f = [0, 1, 2].map(|k| pg[k] - f64::from(cell[k]));
            let mut idx = [0usize; 8];
            let mut w = [0.0; 8];
            for c in 0..8u32 {
                let bits = [c & 1, (c >> 1) & 1, (c >> 2) & 1];
                idx[c as usize] = hash_index(layout, l, [cell[0] + bits[0], cell[1] + bits[1], cell[2] + bits[2]]);
                w[c as usize] = (0..3).map(|k| if bits[k] == 1 { f[k] } else { 1.0 - f[k] }).product();
            }
            (idx, w)
        })
        .collect()
}

pub fn sh_encode(degree: u32, d: [f64; 3]) -> Vec<f64> {
    let (x, y, z) = (d[0], d[1], d[2]);
    let all = [
        0.28209479177387814,
        -0.48860251190291987 * y,
        0.48860251190291987 * z,
        -0.48860251190291987 * x,
        1.0925484305920792 * x * y,
        -1.0925484305920792 * y * z,
        0.94617469575755997 * z * z - 0.31539156525251999,
        -1.0925484305920792 * x * z,
        0.54627421529603959 * (x * x - y * y),
        0.59004358992664352 * y * (3.0 * x * x - y * y),
        2.8906114426405538 * x * y * z,
        0.45704579946446572 * y * (5.0 * z * z - 1.0),
        0.3731763325901154 * z * (5.0 * z * z - 3.0),
        0.45704579946446572 * x * (5.0 * z * z - 1.0),
        1.4453057213202769 * z * (x * x - y * y),
        0.59004358992664352 * x * (x * x - 3.0 * y * y),
    ];
    all[..(degree * degree) as usize].to_vec()
}

pub fn field_eval(
    layout: &FieldLayout,
    params: &[f64],
    node: u32,
    local: [f64; 3],
    dir: [f64; 3],
    max_density: f64,
) -> Acts {
    let base = (node * layout.node_params) as usize;
    let p = |i: u32| params[base + i as usize];
    let mut a = Acts::default();
    for (idx, w) in corners(layout, local) {
        let (mut f0, mut f1) = (0.0, 0.0);
        for c in 0..8 {
            f0 += w[c] * params[base + idx[c]];
            f1 += w[c] * params[base + idx[c] + 1];
        }
        a.in1.extend([f0, f1]);
    }
    let (h, in1, out1, in3) = (layout.hidden, layout.in1, layout.out1, layout.in3);
    a.pre1 = (0..h)
        .map(|j| {
            p(layout.off_b1 + j) + (0..in1).map(|i| p(layout.off_w1 + j * in1 + i) * a.in1[i as usize]).sum::<f64>()
        })
        .collect();
    a.out1 = (0..out1)
        .map(|k| {
            p(layout.off_b2 + k)
                + (0..h).map(|j| p(layout.off_w2 + k * h + j) * a.pre1[j as usize].max(0.0)).sum::<f64>()
        })
        .collect();
    a.sigma = a.out1[0].clamp(-15.0, 15.0).exp().min(max_density);
    a.in3 = a.out1[1..].to_vec();
    a.in3.extend(sh_encode(layout.sh_degree, dir));
    a.pre3 = (0..h)
        .map(|j| {
            p(layout.off_b3 + j) + (0..in3).map(|i| p(layout.off_w3 + j * in3 + i) * a.in3[i as usize]).sum::<f64>()
        })
        .collect();
    for c in 0..3u32 {
        a.out4[c as usize] = p(layout.off_b4 + c)
            + (0..h).map(|j| p(layout.off_w4 + c * h + j) * a.pre3[j as usize].max(0.0)).sum::<f64>();
        a.rgb[c as usize] = 1.0 / (1.0 + (-a.out4[c as usize]).exp());
    }
    a
}

pub fn node_local(octree: &Octree, node: u32, pos: [f32; 3]) -> [f64; 3] {
    let n = &octree.nodes[node as usize];
    [0, 1, 2].map(|k| f64::from((pos[k] - n.min[k]) / n.edge))
}

/// field_forward.wgsl: (rgb, sigma) per sample.
pub fn field_forward(
    layout: &FieldLayout,
    params: &[f64],
    octree: &Octree,
    samples: &[Sample],
    rays: &[Ray],
    max_density: f64,
) -> Vec<[f64; 4]> {
    samples
        .iter()
        .map(|s| {
            if s.node == NO_NODE {
                return [0.0; 4];
            }
            let dir = rays[s.ray as usize].dir.map(f64::from);
            let a = field_eval(layout, params, s.node, node_local(octree, s.node, s.pos), dir, max_density);
            [a.rgb[0], a.rgb[1], a.rgb[2], a.sigma]
        })
        .collect()
}

/// The background each ray is rendered on (random per ray in training, see rays.wgsl).
pub fn ray_backgrounds(frame: &Frame, rays: &[Ray]) -> Vec<[f64; 3]> {
    rays.iter()
        .map(|r| {
            if frame.training != 0 && frame.random_background != 0 {
                unpack(r.background).map(f64::from)
            } else {
                frame.background.map(f64::from)
            }
        })
        .collect()
}

/// render.wgsl forward: per ray (colour, opacity, depth).
pub fn render_forward(
    samples: &[Sample],
    field: &[[f64; 4]],
    n: usize,
    backgrounds: &[[f64; 3]],
) -> Vec<([f64; 3], f64, f64)> {
    field
        .chunks(n)
        .zip(samples.chunks(n))
        .zip(backgrounds)
        .map(|((f, s), background)| {
            let mut t = 1.0;
            let mut rgb = [0.0; 3];
            let mut depth = 0.0;
            for i in 0..n {
                if s[i].node == NO_NODE {
                    continue;
                }
                let alpha = 1.0 - (-(f[i][3] * f64::from(s[i].delta)).min(MAX_TAU)).exp();
                let w = t * alpha;
                for c in 0..3 {
                    rgb[c] += w * f[i][c];
                }
                depth += w * f64::from(s[i].t);
                t *= 1.0 - alpha;
            }
            ([0, 1, 2].map(|c| rgb[c] + t * background[c]), 1.0 - t, depth)
        })
        .collect()
}

/// The training loss: mean over valid rays and channels of the squared error.
pub fn mse_loss(colours: &[([f64; 3], f64, f64)], rays: &[Ray], inv_count: f64) -> f64 {
    colours
        .iter()
        .zip(rays)
        .map(|(c, r)| {
            (0..3).map(|k| (c.0[k] - f64::from(r.target_rgb[k])).powi(2)).sum::<f64>() * f64::from(r.target_rgb[3])
        })
        .sum::<f64>()
        * inv_count
}

/// render.wgsl backward: d loss / d (rgb, sigma) per sample.
pub fn render_backward(
    samples: &[Sample],
    field: &[[f64; 4]],
    rays: &[Ray],
    n: usize,
    backgrounds: &[[f64; 3]],
    inv_count: f64,
) -> Vec<[f64; 4]> {
    let colours = render_forward(samples, field, n, backgrounds);
    let mut grads = vec![[0.0; 4]; field.len()];
    for (r, ray) in rays.iter().enumerate() {
        let colour = colours[r].0;
        let w_ray = f64::from(ray.target_rgb[3]);
        let dc = [0, 1, 2].map(|k| 2.0 * (colour[k] - f64::from(ray.target_rgb[k])) * w_ray * inv_count);
        let mut t = 1.0;
        let mut prefix = [0.0; 3];
        for i in 0..n {
            let s = r * n + i;
            // skipped samples (empty space) have no gradient
            if samples[s].node == NO_NODE {
                continue;
            }
            let f = field[s];
            let delta = f64::from(samples[s].delta);
            let tau = f[3] * delta;
            let alpha = 1.0 - (-tau.min(MAX_TAU)).exp();
            let w = t * alpha;
            for k in 0..3 {
                prefix[k] += w * f[k];
            }
            let t_next = t * (1.0 - alpha);
            let mut d_sigma: f64 =
                (0..3).map(|k| dc[k] * (t_next * f[k] - (colour[k] - prefix[k]))).sum::<f64>() * delta;
            if tau >= MAX_TAU {
                d_sigma = 0.0;
            }
            grads[s] = [dc[0] * w, dc[1] * w, dc[2] * w, d_sigma];
            t = t_next;
        }
    }
    grads
}

/// One dense layer y = W x + b (W row-major [out][in] at `w`, b at `b`): adds dL/dW and dL/db for
/// `d_out` = dL/dy into `grads` and returns dL/dx.
fn dense_backward(grads: &mut [f64], params: &[f64], w: usize, b: usize, d_out: &[f64], input: &[f64]) -> Vec<f64> {
    let n_in = input.len();
    let mut d_in = vec![0.0; n_in];
    for (k, d) in d_out.iter().enumerate() {
        grads[b + k] += d;
        for i in 0..n_in {
            grads[w + k * n_in + i] += d * input[i];
            d_in[i] += params[w + k * n_in + i] * d;
        }
    }
    d_in
}

/// field_backward.wgsl: d loss / d params, given d loss / d (rgb, sigma) per sample.
pub fn field_backward(
    layout: &FieldLayout,
    params: &[f64],
    octree: &Octree,
    samples: &[Sample],
    rays: &[Ray],
    sample_grads: &[[f64; 4]],
    max_density: f64,
) -> Vec<f64> {
    let mut grads = vec![0.0; params.len()];
    for (s, g) in samples.iter().zip(sample_grads) {
        if s.node == NO_NODE || g.iter().all(|&v| v == 0.0) {
            continue;
        }
        let base = (s.node * layout.node_params) as usize;
        let local = node_local(octree, s.node, s.pos);
        let a = field_eval(layout, params, s.node, local, rays[s.ray as usize].dir.map(f64::from), max_density);
        let d_out4 = [0, 1, 2].map(|c| g[c] * a.rgb[c] * (1.0 - a.rgb[c]));
        let o = |offset: u32| base + offset as usize;
        let relu = |v: &[f64]| v.iter().map(|x| x.max(0.0)).collect::<Vec<f64>>();
        let relu_mask =
            |d: Vec<f64>, pre: &[f64]| d.iter().zip(pre).map(|(d, p)| if *p > 0.0 { *d } else { 0.0 }).collect();
        // colour decoder, then density decoder (d sigma / d raw is sigma: the exp activation)
        let d_h3 = dense_backward(&mut grads, params, o(layout.off_w4), o(layout.off_b4), &d_out4, &relu(&a.pre3));
        let d_pre3: Vec<f64> = relu_mask(d_h3, &a.pre3);
        let d_in3 = dense_backward(&mut grads, params, o(layout.off_w3), o(layout.off_b3), &d_pre3, &a.in3);
        let mut d_out1 = vec![g[3] * a.sigma];
        d_out1.extend(&d_in3[..layout.geo as usize]);
        let d_h1 = dense_backward(&mut grads, params, o(layout.off_w2), o(layout.off_b2), &d_out1, &relu(&a.pre1));
        let d_pre1: Vec<f64> = relu_mask(d_h1, &a.pre1);
        let d_in1 = dense_backward(&mut grads, params, o(layout.off_w1), o(layout.off_b1), &d_pre1, &a.in1);
        for (l, (idx, w)) in corners(layout, local).iter().enumerate() {
            for c in 0..8 {
                grads[base + idx[c]] += w[c] * d_in1[2 * l];
                grads[base + idx[c] + 1] += w[c] * d_in1[2 * l + 1];
            }
        }
    }
    grads
}

/// adam.wgsl: one update of params and moments in place.
pub fn adam(frame: &Frame, layout: &FieldLayout, params: &mut [f32], moments: &mut [[f32; 2]], grads: &[f32]) {
    for i in 0..params.len() {
        let g = grads[i];
        if g == 0.0 || !g.is_finite() {
            continue;
        }
        let lr = if (i as u32) % layout.node_params < layout.hash_params { frame.lr_hash } else { frame.lr_mlp };
        let m = &mut moments[i];
        m[0] = frame.beta1 * m[0] + (1.0 - frame.beta1) * g;
        m[1] = frame.beta2 * m[1] + (1.0 - frame.beta2) * g * g;
        params[i] -= lr * (m[0] / frame.bias1) / ((m[1] / frame.bias2).sqrt() + frame.eps);
    }
}

pub fn results_close(a: &RayResult, b: &([f64; 3], f64, f64), tol: f64) -> bool {
    (0..3).all(|k| (f64::from(a.rgb[k]) - b.0[k]).abs() <= tol)
        && (f64::from(a.opacity) - b.1).abs() <= tol
        && (f64::from(a.depth) - b.2).abs() <= tol * (1.0 + b.2.abs())
}

/// Density alone at a node-local point (occupancy.wgsl).
pub fn field_density(layout: &FieldLayout, params: &[f64], node: u32, local: [f64; 3], max_density: f64) -> f64 {
    field_eval(layout, params, node, local, [0.0, 0.0, 1.0], max_density).sigma
}

/// occupancy.wgsl: max(old * decay, density at a jittered point of each cell).
pub fn occupancy_update(frame: &Frame, layout: &FieldLayout, params: &[f64], octree: &Octree, old: &[f32]) -> Vec<f64> {
    let res = frame.occ_resolution;
    (0..res * res * res)
        .map(|cell| {
            if cell % infnerf::trainer::OCC_PHASES != frame.occ_phase {
                return f64::from(old[cell as usize]);
            }
            let c = [cell % res, (cell / res) % res, cell / (res * res)];
            let jitter = [30, 31, 32].map(|stream| rand01(frame.seed, stream, cell));
            let pos = [0, 1, 2].map(|k| (c[k] as f32 + jitter[k]) * (2.0 / res as f32) - 1.0);
            let node = octree.level_node(pos, 0.0, frame.cut);
            let sigma =
                field_density(layout, params, node, node_local(octree, node, pos), f64::from(frame.max_density));
            (f64::from(old[cell as usize]) * f64::from(frame.occ_decay)).max(sigma)
        })
        .collect()
}
