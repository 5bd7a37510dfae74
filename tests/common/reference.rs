//! CPU references of every WGSL pass, in plain Rust (f64 where it helps). Tests only: this is the
//! specification the kernels must match. Each function names the pass it mirrors.

#![allow(dead_code)]
// Index loops mirror the kernels line by line; the SH constants are written as the kernels write them.
#![allow(clippy::needless_range_loop, clippy::excessive_precision)]

use infnerf::field::FieldLayout;
use infnerf::gpu::records::{
    AdamUniforms, Batch, GpuCamera, LossUniforms, Patch, Ray, Sample, Sampling, LOSS_TERMS, MAX_CUTS, OCC_PHASES,
    STATS_CUT_BATCHES, STATS_WORDS,
};
use infnerf::octree::Octree;
use std::ops::Range;

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

pub fn undistort(xd: [f64; 2], k: [f64; 4]) -> [f64; 2] {
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

pub fn unpack(v: u32) -> [f32; 3] {
    [(v & 255) as f32 / 255.0, ((v >> 8) & 255) as f32 / 255.0, ((v >> 16) & 255) as f32 / 255.0]
}

/// rays.wgsl: `targets` are the batch's gathered pixels (RGBA8), one per ray.
pub fn rays(batch: &Batch, cameras: &[GpuCamera], patches: &[Patch], targets: &[u32]) -> Vec<Ray> {
    (0..batch.n_rays)
        .map(|r| {
            let (view, level, px, py) = if batch.training != 0 {
                let per = batch.patch_size * batch.patch_size;
                let p = patches[(r / per) as usize];
                let w = r % per;
                (p.view, p.level, p.x0 + w % batch.patch_size, p.y0 + w / batch.patch_size)
            } else {
                let pixel = r + batch.ray_offset;
                let c = &cameras[batch.view as usize];
                (batch.view, 0, pixel % c.width, pixel / c.width)
            };
            let cam = &cameras[view as usize];
            let (width, height) = (cam.width >> level, cam.height >> level);
            let inside = px < width && py < height;
            let jitter = if batch.training != 0 {
                let g = r + batch.ray_offset;
                [f64::from(rand01(batch.seed, 10, g)), f64::from(rand01(batch.seed, 11, g))]
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
            if inside && batch.training != 0 {
                let packed = targets[r as usize];
                let mut c = unpack(packed);
                if batch.random_background != 0 {
                    let g = r + batch.ray_offset;
                    let bg = [0, 1, 2].map(|k| pcg(batch.seed ^ (3 * g + k)) & 255);
                    background = bg[0] | (bg[1] << 8) | (bg[2] << 16);
                    let transparency = 1.0 - (packed >> 24) as f32 * (1.0 / 255.0);
                    let new_bg = unpack(background);
                    for k in 0..3 {
                        c[k] += (new_bg[k] - batch.background[k]) * transparency;
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

/// Slots (ray at one cut) of a batch.
pub fn slots(batch: &Batch) -> usize {
    (batch.n_rays * batch.n_cuts) as usize
}

/// samples.wgsl, in f32 with the kernel's order of operations (so node choices match), without the
/// ranks (their order among a node's samples is the atomics' order). Slot c * n_rays + r is ray r at
/// cut cuts[c]; skipped samples keep only node = NO_NODE (the kernel writes nothing else of them).
/// `occupancy` and its `mean` are read only when `sampling.skip` is set.
pub fn samples(
    batch: &Batch,
    sampling: &Sampling,
    rays: &[Ray],
    octree: &Octree,
    occupancy: &[f32],
    mean: f32,
) -> Vec<Sample> {
    let n = batch.samples_per_ray;
    (0..batch.n_rays * batch.n_cuts * n)
        .map(|s| {
            let (r, i, cut, k) = sample_slot(batch, s);
            let ray = &rays[r as usize];
            if ray.far <= ray.near {
                return Sample { ray: r, node: NO_NODE, ..Default::default() };
            }
            let u = if batch.training != 0 { rand01(batch.seed, 20, k) } else { 0.5 };
            let delta = (ray.far - ray.near) / n as f32;
            let t = ray.near + (i as f32 + u) * delta;
            place_sample(batch, sampling, ray, r, t, delta, k, cut, octree, occupancy, mean)
        })
        .collect()
}

/// Sample s of a batch: its ray, its index along the ray, its cut, and the index of its random
/// streams (the same at every cut of the ray).
fn sample_slot(batch: &Batch, s: u32) -> (u32, u32, u32, u32) {
    let n = batch.samples_per_ray;
    let (slot, i) = (s / n, s % n);
    let r = slot % batch.n_rays;
    (r, i, batch.cuts[(slot / batch.n_rays) as usize], (r + batch.ray_offset) * n + i)
}

/// place_sample.wgsl: the sample of ray `r` at `t` (interval `delta`): skipped (node NO_NODE) in a
/// cell the grid marks empty unless explored, else its node by footprint capped at `cut` (ranks
/// are the device's order: not set).
#[allow(clippy::too_many_arguments)]
pub fn place_sample(
    batch: &Batch,
    sampling: &Sampling,
    ray: &Ray,
    r: u32,
    t: f32,
    delta: f32,
    k: u32,
    cut: u32,
    octree: &Octree,
    occupancy: &[f32],
    mean: f32,
) -> Sample {
    let pos = [0, 1, 2].map(|a| (ray.origin[a] + t * ray.dir[a]).clamp(-1.0, 1.0));
    if sampling.skip != 0 {
        let threshold = (sampling.threshold / delta).min(mean);
        let explore = batch.training != 0 && rand01(batch.seed, 22, k) < sampling.explore;
        if occupancy[occupancy_cell(pos, sampling.resolution)] < threshold && !explore {
            return Sample { node: NO_NODE, ..Default::default() };
        }
    }
    let v = if batch.training != 0 { rand01(batch.seed, 21, k) } else { 0.5 };
    let radius = t * ray.pixel_radius * (v - 0.5).exp2();
    Sample { pos, node: octree.level_node(pos, radius, cut), t, delta, ray: r, rank: 0 }
}

/// proposal_cdf.wgsl: per ray of the proposal's batch, the CDF of its dilated weights mixed with
/// `floor` of uniform (proposal_samples + 1 values each), and the proposal's evaluated samples.
pub fn proposal_cdf(batch: &Batch, floor: f32, samples: &[Sample], field_out: &[[f64; 4]]) -> (Vec<f64>, u32) {
    let n = batch.samples_per_ray as usize;
    let mut cdf = Vec::with_capacity(batch.n_rays as usize * (n + 1));
    let mut evaluated = 0;
    for r in 0..batch.n_rays as usize {
        let first = r * n;
        let mut transmittance = 1.0;
        let weights: Vec<f64> = (0..n)
            .map(|j| {
                let sample = &samples[first + j];
                if sample.node == NO_NODE {
                    return 0.0;
                }
                evaluated += 1;
                let tau = field_out[first + j][3].max(0.0) * f64::from(sample.delta);
                let alpha = 1.0 - (-tau.min(MAX_TAU)).exp();
                let w = transmittance * alpha;
                transmittance *= 1.0 - alpha;
                w
            })
            .collect();
        let dilated: Vec<f64> =
            (0..n).map(|j| weights[j.saturating_sub(1)..(j + 2).min(n)].iter().copied().fold(0.0, f64::max)).collect();
        let total: f64 = dilated.iter().sum();
        let (floor, scale) =
            if total > 0.0 { (f64::from(floor), (1.0 - f64::from(floor)) / total) } else { (1.0, 0.0) };
        let mut sum = 0.0;
        cdf.push(0.0);
        for (j, w) in dilated.iter().enumerate() {
            sum += w * scale + floor / n as f64;
            cdf.push(if j + 1 == n { 1.0 } else { sum });
        }
    }
    (cdf, evaluated)
}

/// resample.wgsl: every cut's samples of each ray by inverse CDF from its proposal (`cdf` of
/// `proposal_samples` bins per ray): interval i between edges i and i + 1, edge j at the inverse CDF
/// of (j - 1/2 + xi_j) / n, edges 0 and n the ray's near and far.
#[allow(clippy::too_many_arguments)]
pub fn resample(
    batch: &Batch,
    proposal_samples: u32,
    sampling: &Sampling,
    rays: &[Ray],
    octree: &Octree,
    cdf: &[f64],
    occupancy: &[f32],
    mean: f32,
) -> Vec<Sample> {
    let n = batch.samples_per_ray;
    let m = proposal_samples as usize;
    let edge = |r: u32, j: u32| -> f64 {
        let ray = &rays[r as usize];
        let (near, far) = (f64::from(ray.near), f64::from(ray.far));
        if j == 0 {
            return near;
        }
        if j >= n {
            return far;
        }
        let xi = if batch.training != 0 { rand01(batch.seed, 23, (r + batch.ray_offset) * (n + 1) + j) } else { 0.5 };
        let u = (f64::from(j) - 0.5 + f64::from(xi)) / f64::from(n);
        let c = &cdf[r as usize * (m + 1)..(r as usize + 1) * (m + 1)];
        let bin = (0..m).rev().find(|&b| c[b] <= u).unwrap_or(0);
        let within = ((u - c[bin]) / (c[bin + 1] - c[bin]).max(1e-12)).clamp(0.0, 1.0);
        near + (bin as f64 + within) * (far - near) / m as f64
    };
    (0..batch.n_rays * batch.n_cuts * n)
        .map(|s| {
            let (r, i, cut, k) = sample_slot(batch, s);
            let ray = &rays[r as usize];
            if ray.far <= ray.near {
                return Sample { ray: r, node: NO_NODE, ..Default::default() };
            }
            let (t0, t1) = (edge(r, i), edge(r, i + 1));
            let (t, delta) = (0.5 * (t0 + t1), t1 - t0);
            place_sample(batch, sampling, ray, r, t as f32, delta as f32, k, cut, octree, occupancy, mean)
        })
        .collect()
}

/// common.wgsl's occupancy_cell: the index of the grid cell (of `res`^3 over the cube) holding `pos`.
pub fn occupancy_cell(pos: [f32; 3], res: u32) -> usize {
    let cell = pos.map(|p| ((((p + 1.0) * 0.5).clamp(0.0, 1.0) * res as f32) as u32).min(res - 1));
    (cell[0] + res * (cell[1] + res * cell[2])) as usize
}

/// Active samples per node (samples.wgsl's node_counts).
pub fn node_counts(samples: &[Sample], n_nodes: usize) -> Vec<u32> {
    let mut counts = vec![0u32; n_nodes];
    for s in samples.iter().filter(|s| s.node != NO_NODE) {
        counts[s.node as usize] += 1;
    }
    counts
}

/// What node_scan.wgsl computes from the per-node counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScan {
    /// Exclusive prefix sum of the counts.
    pub offsets: Vec<u32>,
    /// Exclusive prefix sum of ceil(count / field_wg), one entry past the last node (the total).
    pub wg_first: Vec<u32>,
    /// (x, y, z) workgroups of each page's field dispatch.
    pub dispatch_args: Vec<[u32; 3]>,
    pub active: u32,
}

/// node_scan.wgsl: pages of `nodes_per_page` whole nodes.
pub fn node_scan(counts: &[u32], nodes_per_page: u32, n_pages: u32, field_wg: u32) -> NodeScan {
    let mut offsets = Vec::with_capacity(counts.len());
    let mut wg_first = Vec::with_capacity(counts.len() + 1);
    let (mut samples, mut groups) = (0u32, 0u32);
    for &c in counts {
        offsets.push(samples);
        wg_first.push(groups);
        samples += c;
        groups += c.div_ceil(field_wg);
    }
    wg_first.push(groups);
    let dispatch_args = (0..n_pages)
        .map(|p| {
            let a = (p * nodes_per_page) as usize;
            let b = (a + nodes_per_page as usize).min(counts.len());
            let total = wg_first[b] - wg_first[a];
            let x = total.min(65535);
            [x, if x > 0 { total.div_ceil(x) } else { 0 }, 1]
        })
        .collect();
    NodeScan { offsets, wg_first, dispatch_args, active: samples }
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

/// One level's two features at a point: the corners' weighted sum.
fn interpolate(params: &[f64], base: usize, idx: &[usize; 8], w: &[f64; 8]) -> [f64; 2] {
    let mut f = [0.0; 2];
    for c in 0..8 {
        for (k, feature) in f.iter_mut().enumerate() {
            *feature += w[c] * params[base + idx[c] + k];
        }
    }
    f
}

/// field.wgsl's field_eval for node `node` (its block at node * node_params of `params`).
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
        a.in1.extend(interpolate(params, base, &idx, &w));
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

/// field_forward.wgsl: (rgb, sigma) per sample (zeros for skipped samples, which the kernel leaves
/// untouched).
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

/// What render_forward.wgsl writes per slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Output {
    pub rgb: [f64; 3],
    pub opacity: f64,
    pub depth: f64,
    pub evaluated: u32,
    /// the node of the first sample of largest weight, -1 when no weight is positive
    pub node: i64,
    /// the largest weight less the second largest (infinite below two positive weights): where it
    /// is tiny, f32 may pick another node
    pub node_margin: f64,
}

/// dLoss/d(output) per slot (RayGrad).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OutputGrad {
    pub rgb: [f64; 3],
    pub opacity: f64,
    pub depth: f64,
}

/// The background behind ray `ray` (random per ray in training with random backgrounds, rays.wgsl).
pub fn background(batch: &Batch, ray: &Ray) -> [f64; 3] {
    if batch.training != 0 && batch.random_background != 0 {
        unpack(ray.background).map(f64::from)
    } else {
        batch.background.map(f64::from)
    }
}

/// render_forward.wgsl: colour over the background, opacity, depth, evaluated samples and the node of
/// largest weight per slot.
pub fn render_forward(batch: &Batch, rays: &[Ray], samples: &[Sample], field: &[[f64; 4]]) -> Vec<Output> {
    let n = batch.samples_per_ray as usize;
    (0..slots(batch))
        .map(|slot| {
            let (s, f) = (&samples[slot * n..(slot + 1) * n], &field[slot * n..(slot + 1) * n]);
            let mut t = 1.0;
            let mut out = Output { node: -1, ..Default::default() };
            // the two largest weights so far
            let (mut first, mut second) = (0.0, 0.0);
            for i in 0..n {
                if s[i].node == NO_NODE {
                    continue;
                }
                out.evaluated += 1;
                let alpha = 1.0 - (-(f[i][3] * f64::from(s[i].delta)).min(MAX_TAU)).exp();
                let w = t * alpha;
                if w > first {
                    (first, second) = (w, first);
                    out.node = i64::from(s[i].node);
                } else if w > second {
                    second = w;
                }
                for c in 0..3 {
                    out.rgb[c] += w * f[i][c];
                }
                out.depth += w * f64::from(s[i].t);
                t *= 1.0 - alpha;
            }
            out.node_margin = if second > 0.0 { first - second } else { f64::INFINITY };
            let bg = background(batch, &rays[slot % batch.n_rays as usize]);
            for c in 0..3 {
                out.rgb[c] += t * bg[c];
            }
            out.opacity = 1.0 - t;
            out
        })
        .collect()
}

/// loss_mse.wgsl: (dLoss/d(rgb) per slot, the unweighted loss share per slot). The weighted loss the
/// optimiser sees is sum over slots of lambdas[TERM_MSE] * cut_weights[cut] * loss share.
pub fn loss_mse(batch: &Batch, loss: &LossUniforms, rays: &[Ray], outputs: &[Output]) -> (Vec<OutputGrad>, Vec<f64>) {
    let n_rays = batch.n_rays as usize;
    outputs
        .iter()
        .enumerate()
        .map(|(slot, out)| {
            let target = rays[slot % n_rays].target_rgb.map(f64::from);
            let diff = [0, 1, 2].map(|c| out.rgb[c] - target[c]);
            let share = f64::from(loss.inv_count) * target[3];
            let weight = f64::from(loss.lambdas[0][0]) * f64::from(loss.cut_weights[slot / n_rays]);
            let grad = OutputGrad { rgb: diff.map(|d| 2.0 * d * share * weight), ..Default::default() };
            (grad, diff.iter().map(|d| d * d).sum::<f64>() * share)
        })
        .unzip()
}

/// The weighted MSE the optimiser sees (what loss_mse's gradients are the gradient of).
pub fn weighted_mse(batch: &Batch, loss: &LossUniforms, rays: &[Ray], outputs: &[Output]) -> f64 {
    let n_rays = batch.n_rays as usize;
    let (_, shares) = loss_mse(batch, loss, rays, outputs);
    shares
        .iter()
        .enumerate()
        .map(|(slot, v)| v * f64::from(loss.lambdas[0][0]) * f64::from(loss.cut_weights[slot / n_rays]))
        .sum()
}

/// The weight of loss term `term` (its index in LOSS_NAMES) at the cut of `slot`.
fn term_weight(batch: &Batch, loss: &LossUniforms, term: usize, slot: usize) -> f64 {
    f64::from(loss.lambdas[term / 4][term % 4]) * f64::from(loss.cut_weights[slot / batch.n_rays as usize])
}

pub const TERM_TV: usize = 1;
pub const TERM_TV_DEPTH: usize = 2;
pub const TERM_SPARSITY: usize = 3;
pub const TERM_SSIM: usize = 4;
pub const TERM_DEPTH_CONSISTENCY: usize = 5;

/// ray_loss.wgsl's square of a training ray: (pixel (x, y) in it, edge, first patch, tiles per side).
pub fn structure_of(batch: &Batch, ray: usize) -> ((usize, usize), usize, usize, usize) {
    let p = batch.patch_size as usize;
    let (patch, within) = (ray / (p * p), ray % (p * p));
    let (x, y) = (within % p, within / p);
    if patch >= batch.grouped_patches as usize {
        return ((x, y), p, patch, 1);
    }
    let m = batch.group_tiles as usize;
    let tile = patch % (m * m);
    (((tile % m) * p + x, (tile / m) * p + y), m * p, patch - tile, m)
}

/// The ray at pixel (x, y) of the square whose first patch is `first` with `tiles` tiles per side.
pub fn structure_ray(batch: &Batch, first: usize, tiles: usize, (x, y): (usize, usize)) -> usize {
    let p = batch.patch_size as usize;
    (first + (y / p) * tiles + x / p) * p * p + (y % p) * p + x % p
}

/// loss_tv.wgsl: (dLoss/d(rgb, depth) per slot, the unweighted shares of TV and TV_DEPTH per slot).
/// The pairs are the horizontally and vertically adjacent pixels of each patch (or structure patch) with both pixels on
/// the image; a slot's shares are its pairs to the right and below.
pub fn loss_tv(
    batch: &Batch,
    loss: &LossUniforms,
    rays: &[Ray],
    outputs: &[Output],
) -> (Vec<OutputGrad>, [Vec<f64>; 2]) {
    let n_rays = batch.n_rays as usize;
    let inv = f64::from(loss.inv_pairs);
    let inside = |slot: usize| rays[slot % n_rays].target_rgb[3] > 0.0;
    let mut grads = vec![OutputGrad::default(); outputs.len()];
    let mut shares = [vec![0.0; outputs.len()], vec![0.0; outputs.len()]];
    for slot in 0..outputs.len() {
        let ((x, y), size, first, tiles) = structure_of(batch, slot % n_rays);
        let cut_first = slot - slot % n_rays;
        for (exists, at) in [(x + 1 < size, (x + 1, y)), (y + 1 < size, (x, y + 1))] {
            if !exists {
                continue;
            }
            let n = cut_first + structure_ray(batch, first, tiles, at);
            if !inside(slot) || !inside(n) {
                continue;
            }
            let (a, b) = (&outputs[slot], &outputs[n]);
            for c in 0..3 {
                let d = a.rgb[c] - b.rgb[c];
                shares[0][slot] += d.abs() * inv;
                let g = d.signum() * inv * term_weight(batch, loss, TERM_TV, slot);
                grads[slot].rgb[c] += g;
                grads[n].rgb[c] -= g;
            }
            let d = a.depth - b.depth;
            shares[1][slot] += d.abs() * 3.0 * inv;
            let g = d.signum() * 3.0 * inv * term_weight(batch, loss, TERM_TV_DEPTH, slot);
            grads[slot].depth += g;
            grads[n].depth -= g;
        }
    }
    (grads, shares)
}

/// The weighted total variation the optimiser sees (what loss_tv's gradients are the gradient of).
pub fn weighted_tv(batch: &Batch, loss: &LossUniforms, rays: &[Ray], outputs: &[Output]) -> f64 {
    let (_, [rgb, depth]) = loss_tv(batch, loss, rays, outputs);
    (0..outputs.len())
        .map(|slot| {
            rgb[slot] * term_weight(batch, loss, TERM_TV, slot)
                + depth[slot] * term_weight(batch, loss, TERM_TV_DEPTH, slot)
        })
        .sum()
}

/// loss_sparsity.wgsl: (dLoss/d sigma to add per sample, the unweighted share per slot).
pub fn loss_sparsity(
    batch: &Batch,
    loss: &LossUniforms,
    samples: &[Sample],
    field: &[[f64; 4]],
) -> (Vec<f64>, Vec<f64>) {
    let n = batch.samples_per_ray as usize;
    let inv = f64::from(loss.inv_samples);
    let mut grads = vec![0.0; samples.len()];
    let shares = (0..slots(batch))
        .map(|slot| {
            let mut total = 0.0;
            for s in slot * n..(slot + 1) * n {
                if samples[s].node != NO_NODE {
                    total += field[s][3];
                    grads[s] = inv * term_weight(batch, loss, TERM_SPARSITY, slot);
                }
            }
            total * inv
        })
        .collect();
    (grads, shares)
}

/// render_backward.wgsl: dLoss/d(rgb, sigma) per sample from dLoss/d(rgb, opacity, depth) per slot
/// (`outputs`: the forward render's, which the formulas reuse).
pub fn render_backward(
    batch: &Batch,
    samples: &[Sample],
    field: &[[f64; 4]],
    outputs: &[Output],
    grads: &[OutputGrad],
) -> Vec<[f64; 4]> {
    let n = batch.samples_per_ray as usize;
    let mut sample_grads = vec![[0.0; 4]; samples.len()];
    for slot in 0..slots(batch) {
        let (out, g) = (&outputs[slot], &grads[slot]);
        let t_final = 1.0 - out.opacity;
        let mut t = 1.0;
        let mut prefix_rgb = [0.0; 3];
        let mut prefix_depth = 0.0;
        for i in 0..n {
            let s = slot * n + i;
            // skipped samples (empty space) have no gradient
            if samples[s].node == NO_NODE {
                continue;
            }
            let f = field[s];
            let delta = f64::from(samples[s].delta);
            let tau = f[3] * delta;
            let alpha = 1.0 - (-tau.min(MAX_TAU)).exp();
            let w = t * alpha;
            for c in 0..3 {
                prefix_rgb[c] += w * f[c];
            }
            let ts = f64::from(samples[s].t);
            prefix_depth += w * ts;
            let t_next = t * (1.0 - alpha);
            let mut d_sigma: f64 = (0..3).map(|c| g.rgb[c] * (t_next * f[c] - (out.rgb[c] - prefix_rgb[c]))).sum();
            d_sigma += g.depth * (t_next * ts - (out.depth - prefix_depth));
            d_sigma += g.opacity * t_final;
            d_sigma *= delta;
            if tau >= MAX_TAU {
                d_sigma = 0.0;
            }
            sample_grads[s] = [g.rgb[0] * w, g.rgb[1] * w, g.rgb[2] * w, d_sigma];
            t = t_next;
        }
    }
    sample_grads
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

/// field_backward.wgsl: dLoss/d(params) (all nodes, node after node) from dLoss/d(rgb, sigma) per
/// sample. The density's clamps pass the gradient straight through (d sigma / d raw = sigma).
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

/// adam.wgsl: one update in place, in f32 as the kernel computes it. Entries without gradient keep
/// their moments and parameters; non-finite gradients are dropped (returned: how many).
pub fn adam(
    u: &AdamUniforms,
    layout: &FieldLayout,
    params: &mut [f32],
    m1: &mut [f32],
    m2: &mut [f32],
    grads: &[f32],
) -> u32 {
    let mut dropped = 0;
    for i in 0..params.len() {
        let g = grads[i];
        if g == 0.0 {
            continue;
        }
        if !g.is_finite() {
            dropped += 1;
            continue;
        }
        let lr = if (i as u32) % layout.node_params < layout.hash_params { u.lr_hash } else { u.lr_mlp };
        // the parameter L2's gradient, on the entries with a gradient
        let g = g + u.l2 * params[i];
        m1[i] = u.beta1 * m1[i] + (1.0 - u.beta1) * g;
        m2[i] = u.beta2 * m2[i] + (1.0 - u.beta2) * g * g;
        params[i] -= lr * (m1[i] / u.bias1) / ((m2[i] / u.bias2).sqrt() + u.eps);
    }
    dropped
}

/// Density alone at a node-local point (occupancy.wgsl's field_density).
pub fn field_density(layout: &FieldLayout, params: &[f64], node: u32, local: [f64; 3], max_density: f64) -> f64 {
    field_eval(layout, params, node, local, [0.0, 0.0, 1.0], max_density).sigma
}

/// occupancy.wgsl: the cells of `sampling.phase` take max(old * decay, the density at a jittered
/// point of the cell, from the deepest node there); the others keep their value.
pub fn occupancy_update(
    sampling: &Sampling,
    layout: &FieldLayout,
    params: &[f64],
    octree: &Octree,
    old: &[f32],
    max_density: f64,
) -> Vec<f64> {
    let res = sampling.resolution;
    (0..res * res * res)
        .map(|cell| {
            if cell % OCC_PHASES != sampling.phase {
                return f64::from(old[cell as usize]);
            }
            let c = [cell % res, (cell / res) % res, cell / (res * res)];
            let jitter = [30, 31, 32].map(|stream| rand01(sampling.seed, stream, cell));
            let pos = [0, 1, 2].map(|k| (c[k] as f32 + jitter[k]) * (2.0 / res as f32) - 1.0);
            let node = octree.level_node(pos, 0.0, u32::MAX);
            let sigma = field_density(layout, params, node, node_local(octree, node, pos), max_density);
            (f64::from(old[cell as usize]) * f64::from(sampling.decay)).max(sigma)
        })
        .collect()
}

/// occupancy_mean.wgsl.
pub fn occupancy_mean(grid: &[f64]) -> f64 {
    grid.iter().sum::<f64>() / grid.len() as f64
}

/// loss_stats.wgsl: `stats` plus this batch's step count, evaluated samples, weighted loss and per
/// term and cut the sum of the loss shares (`losses`: LOSS_TERMS rows of one value per slot).
pub fn loss_stats(batch: &Batch, loss: &LossUniforms, outputs: &[Output], losses: &[f64], stats: &[f64]) -> Vec<f64> {
    let mut out = stats.to_vec();
    assert_eq!(out.len(), STATS_WORDS);
    let n_slots = slots(batch);
    out[0] += 1.0;
    for c in 0..batch.n_cuts as usize {
        out[STATS_CUT_BATCHES + c] += 1.0;
    }
    for slot in 0..n_slots {
        let c = slot / batch.n_rays as usize;
        out[1] += f64::from(outputs[slot].evaluated);
        for t in 0..LOSS_TERMS {
            let value = losses[t * n_slots + slot];
            out[2] += f64::from(loss.lambdas[t / 4][t % 4]) * f64::from(loss.cut_weights[c]) * value;
            out[3 + t * MAX_CUTS + c] += value;
        }
    }
    out
}

/// One parameter tensor of a node's block: a hash level's table or one decoder weight or bias.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    /// Offsets inside a node's block.
    pub range: Range<usize>,
    pub hash: bool,
}

/// Every tensor of a node's parameter block, in block order.
pub fn tensors(layout: &FieldLayout) -> Vec<Tensor> {
    let table = (layout.table_size * 2) as usize;
    let mut out: Vec<Tensor> = (0..layout.hash_levels as usize)
        .map(|l| Tensor { name: format!("hash level {l}"), range: l * table..(l + 1) * table, hash: true })
        .collect();
    let l = layout;
    let bounds = [
        ("W1", l.off_w1, l.off_b1),
        ("b1", l.off_b1, l.off_w2),
        ("W2", l.off_w2, l.off_b2),
        ("b2", l.off_b2, l.off_w3),
        ("W3", l.off_w3, l.off_b3),
        ("b3", l.off_b3, l.off_w4),
        ("W4", l.off_w4, l.off_b4),
        ("b4", l.off_b4, l.node_params),
    ];
    for (name, start, end) in bounds {
        out.push(Tensor { name: name.to_string(), range: start as usize..end as usize, hash: false });
    }
    assert_eq!(out.last().map(|t| t.range.end), Some(layout.node_params as usize));
    out
}

/// Compares parameter gradients tensor by tensor (every node's hash levels and decoder tensors): the
/// largest difference in a tensor must be at most `rel` times that tensor's own largest reference
/// gradient, and a tensor without reference gradient must have none. Returns the tensors with a
/// gradient and the worst relative difference seen.
pub fn assert_close_per_tensor(
    what: &str,
    layout: &FieldLayout,
    actual: &[f64],
    reference: &[f64],
    rel: f64,
) -> (usize, f64) {
    assert_eq!(actual.len(), reference.len(), "{what}: lengths");
    let block = layout.node_params as usize;
    let mut with_gradient = 0;
    let mut worst = 0.0f64;
    for node in 0..reference.len() / block {
        for tensor in tensors(layout) {
            let range = node * block + tensor.range.start..node * block + tensor.range.end;
            let scale = reference[range.clone()].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let (at, diff) = range
                .clone()
                .map(|i| (i, (actual[i] - reference[i]).abs()))
                .fold((range.start, 0.0f64), |best, x| if x.1 > best.1 { x } else { best });
            if scale == 0.0 {
                assert!(
                    diff == 0.0,
                    "{what}: node {node} {} has no reference gradient but got {}",
                    tensor.name,
                    actual[at]
                );
                continue;
            }
            with_gradient += 1;
            worst = worst.max(diff / scale);
            assert!(
                diff <= rel * scale,
                "{what}: node {node} {}: entry {} is {} against {} (difference {diff:e}, tensor scale {scale:e})",
                tensor.name,
                at - node * block,
                actual[at],
                reference[at]
            );
        }
    }
    (with_gradient, worst)
}

/// loss_ssim.wgsl: (dLoss/d rgb per slot, the unweighted share of 1 - SSIM per slot). Walks the
/// windows (the kernel walks the pixels): every W x W window wholly inside a patch with every pixel
/// on the image, box weights, biased moments; a window's value is kept at its top-left slot.
pub fn loss_ssim(batch: &Batch, loss: &LossUniforms, rays: &[Ray], outputs: &[Output]) -> (Vec<OutputGrad>, Vec<f64>) {
    const C1: f64 = 0.0001;
    const C2: f64 = 0.0009;
    let (n_rays, w) = (batch.n_rays as usize, loss.ssim_window as usize);
    let inv = f64::from(loss.inv_windows);
    let n = (w * w) as f64;
    let mut grads = vec![OutputGrad::default(); outputs.len()];
    let mut shares = vec![0.0; outputs.len()];
    for top_left in 0..outputs.len() {
        let ((x, y), size, first, tiles) = structure_of(batch, top_left % n_rays);
        if x + w > size || y + w > size {
            continue;
        }
        let cut_first = top_left - top_left % n_rays;
        let members: Vec<usize> =
            (0..w * w).map(|k| cut_first + structure_ray(batch, first, tiles, (x + k % w, y + k / w))).collect();
        if members.iter().any(|&slot| rays[slot % n_rays].target_rgb[3] <= 0.0) {
            continue;
        }
        let weight = term_weight(batch, loss, TERM_SSIM, top_left);
        for c in 0..3 {
            let xs: Vec<f64> = members.iter().map(|&slot| outputs[slot].rgb[c]).collect();
            let ys: Vec<f64> = members.iter().map(|&slot| f64::from(rays[slot % n_rays].target_rgb[c])).collect();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
            let (mx, my) = (mean(&xs), mean(&ys));
            let vx = xs.iter().map(|v| (v - mx) * (v - mx)).sum::<f64>() / n;
            let vy = ys.iter().map(|v| (v - my) * (v - my)).sum::<f64>() / n;
            let cxy = xs.iter().zip(&ys).map(|(a, b)| (a - mx) * (b - my)).sum::<f64>() / n;
            let (num1, num2) = (2.0 * mx * my + C1, 2.0 * cxy + C2);
            let (den1, den2) = (mx * mx + my * my + C1, vx + vy + C2);
            let ssim = num1 * num2 / (den1 * den2);
            shares[top_left] += (1.0 - ssim) * inv;
            for (k, &slot) in members.iter().enumerate() {
                // quotient rule on (num1 num2) / (den1 den2), each factor's derivative by x_k
                let d_num = 2.0 * my / n * num2 + num1 * 2.0 * (ys[k] - my) / n;
                let d_den = 2.0 * mx / n * den2 + den1 * 2.0 * (xs[k] - mx) / n;
                let d_ssim = (d_num * den1 * den2 - num1 * num2 * d_den) / (den1 * den2).powi(2);
                grads[slot].rgb[c] -= d_ssim * inv * weight;
            }
        }
    }
    (grads, shares)
}

/// The weighted 1 - SSIM the optimiser sees.
pub fn weighted_ssim(batch: &Batch, loss: &LossUniforms, rays: &[Ray], outputs: &[Output]) -> f64 {
    let (_, shares) = loss_ssim(batch, loss, rays, outputs);
    shares.iter().enumerate().map(|(slot, v)| v * term_weight(batch, loss, TERM_SSIM, slot)).sum()
}

/// loss_depth_consistency.wgsl: (dLoss/d depth per slot, the unweighted share per slot). Walks the
/// pairs (each cut with `loss.finer_cut`) over the rays with a target; the pair's value is kept at
/// the coarser cut's slot.
pub fn loss_depth_consistency(
    batch: &Batch,
    loss: &LossUniforms,
    rays: &[Ray],
    outputs: &[Output],
) -> (Vec<OutputGrad>, Vec<f64>) {
    let n_rays = batch.n_rays as usize;
    let (inv, delta) = (f64::from(loss.inv_rays), f64::from(loss.huber_delta));
    let lambda = f64::from(loss.lambdas[TERM_DEPTH_CONSISTENCY / 4][TERM_DEPTH_CONSISTENCY % 4]);
    let mut grads = vec![OutputGrad::default(); outputs.len()];
    let mut shares = vec![0.0; outputs.len()];
    for cut in 0..batch.n_cuts as usize {
        let finer = loss.finer_cut[cut];
        if finer == infnerf::gpu::records::NO_CUT {
            continue;
        }
        for r in (0..n_rays).filter(|&r| rays[r].target_rgb[3] > 0.0) {
            let (coarse, fine) = (cut * n_rays + r, finer as usize * n_rays + r);
            let d = outputs[coarse].depth - outputs[fine].depth;
            let (value, slope) =
                if d.abs() < delta { (0.5 * d * d / delta, d / delta) } else { (d.abs() - 0.5 * delta, d.signum()) };
            shares[coarse] += value * inv;
            grads[coarse].depth += slope * inv * lambda;
            grads[fine].depth -= slope * inv * lambda;
        }
    }
    (grads, shares)
}

/// The weighted depth consistency the optimiser sees (lambda alone: no level weight).
pub fn weighted_depth_consistency(batch: &Batch, loss: &LossUniforms, rays: &[Ray], outputs: &[Output]) -> f64 {
    let (_, shares) = loss_depth_consistency(batch, loss, rays, outputs);
    let lambda = f64::from(loss.lambdas[TERM_DEPTH_CONSISTENCY / 4][TERM_DEPTH_CONSISTENCY % 4]);
    shares.iter().sum::<f64>() * lambda
}

/// The parameter L2 the optimiser sees: weight x the mean of p^2 (param_norm.wgsl measures the sum;
/// Adam applies the gradient 2 x weight / N x p).
pub fn param_l2(weight: f64, params: &[f64]) -> f64 {
    weight * params.iter().map(|p| p * p).sum::<f64>() / params.len() as f64
}

/// grad_norm.wgsl + grad_stats.wgsl: per tensor (hash, density, colour) of the entries with a
/// gradient, [sum of squares, sum, count, largest magnitude], and the count of non-finite entries.
pub fn grad_stats(layout: &FieldLayout, grads: &[f32]) -> ([[f64; 4]; 3], u32) {
    let mut stats = [[0.0f64; 4]; 3];
    let mut nonfinite = 0;
    for (i, &g) in grads.iter().enumerate() {
        if g == 0.0 {
            continue;
        }
        if !g.is_finite() {
            nonfinite += 1;
            continue;
        }
        let offset = i as u32 % layout.node_params;
        let t = if offset < layout.hash_params {
            0
        } else if offset < layout.off_w3 {
            1
        } else {
            2
        };
        let g = f64::from(g);
        stats[t][0] += g * g;
        stats[t][1] += g;
        stats[t][2] += 1.0;
        stats[t][3] = stats[t][3].max(g.abs());
    }
    (stats, nonfinite)
}

/// grad_guard.wgsl's decision, step by step (f32 as the kernel computes it).
#[derive(Clone, Debug, Default)]
pub struct Guard {
    pub loss_history: Vec<f32>,
    pub norm_history: Vec<f32>,
    pub next: usize,
    pub run: u32,
    pub anomalies: [u32; 3],
    pub skipped: u32,
    pub clipped: u32,
    pub max_run: u32,
}

/// What the guard decided at one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardStep {
    pub norm: f32,
    pub skip: bool,
    /// the gradient's factor (meaningful when not skipped)
    pub scale: f32,
    /// 0 none, 1 loss spike, 2 norm spike, 3 non-finite
    pub anomaly: u32,
}

impl Guard {
    /// One step with the gradient's sum of squares `sum_sq`, `nonfinite` non-finite entries and the
    /// step's loss; settings clip, sigma, window, min_ratio.
    pub fn step(
        &mut self,
        sum_sq: f32,
        nonfinite: u32,
        loss: f32,
        (clip, sigma, window, min_ratio): (f32, f32, usize, f32),
    ) -> GuardStep {
        let norm = sum_sq.sqrt();
        let spike = |history: &[f32], x: f32| {
            let mean = history.iter().sum::<f32>() / window as f32;
            let var = history.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / window as f32;
            x > mean + sigma * var.sqrt() && x >= min_ratio * mean
        };
        let full = self.loss_history.len() >= window;
        let mut anomaly = 0;
        if sigma > 0.0 {
            if nonfinite > 0 || !norm.is_finite() || !loss.is_finite() {
                anomaly = 3;
            } else if full && spike(&self.loss_history, loss) {
                anomaly = 1;
            } else if full && spike(&self.norm_history, norm) {
                anomaly = 2;
            }
        }
        if anomaly > 0 {
            self.anomalies[anomaly as usize - 1] += 1;
            self.skipped += 1;
            self.run += 1;
            self.max_run = self.max_run.max(self.run);
            if self.run as usize >= window {
                *self = Self {
                    anomalies: self.anomalies,
                    skipped: self.skipped,
                    max_run: self.max_run,
                    clipped: self.clipped,
                    ..Default::default()
                };
            }
            return GuardStep { norm, skip: true, scale: f32::NAN, anomaly };
        }
        self.run = 0;
        if self.loss_history.len() < window {
            self.loss_history.push(loss);
            self.norm_history.push(norm);
        } else {
            self.loss_history[self.next] = loss;
            self.norm_history[self.next] = norm;
        }
        self.next = (self.next + 1) % window;
        let mut scale = 1.0;
        if clip > 0.0 && norm > clip {
            scale = clip / norm;
            self.clipped += 1;
        }
        GuardStep { norm, skip: false, scale, anomaly: 0 }
    }
}

pub const TERM_NORMAL_CONSISTENCY: usize = 7;
pub const TERM_DENSITY_CONSISTENCY: usize = 8;
pub const TERM_SEAM: usize = 9;
pub const PROBES_PER_GROUP: usize = 16;
pub const NORMAL_EPSILON: f64 = 0.05;

/// probes.wgsl: the batch's probe groups (PROBES_PER_GROUP samples each, after the ray samples), from
/// the batch's ray samples `samples`; ranks left 0 (the atomics' order).
pub fn probes(batch: &Batch, samples: &[Sample], octree: &Octree) -> Vec<Sample> {
    let ray_samples = batch.n_rays * batch.n_cuts * batch.samples_per_ray;
    let none = Sample { node: NO_NODE, ..Default::default() };
    let mut out = vec![none; batch.probe_groups as usize * PROBES_PER_GROUP];
    for g in 0..batch.probe_groups {
        let index = g + batch.ray_offset;
        let group = &mut out[g as usize * PROBES_PER_GROUP..(g as usize + 1) * PROBES_PER_GROUP];
        let source = (0..4).find_map(|t| {
            let s = ((rand01(batch.seed, 30 + t, index) * ray_samples as f32) as u32).min(ray_samples - 1);
            let node = samples[s as usize].node;
            (node != NO_NODE && octree.nodes[node as usize].depth > 0).then_some(samples[s as usize])
        });
        let Some(source) = source else { continue };
        let node = &octree.nodes[source.node as usize];
        let probe =
            |pos: [f32; 3], node: u32, h: f32| Sample { pos, node, delta: h, ray: source.ray, ..Default::default() };
        if batch.probe_kinds & 1 != 0 {
            let h = node.gsd;
            let centre = [0, 1, 2].map(|a| source.pos[a].max(node.min[a] + h).min(node.min[a] + (node.edge - h)));
            for k in 0..7 {
                let mut p = centre;
                if k > 0 {
                    p[(k - 1) / 2] += h * if k % 2 == 0 { 1.0 } else { -1.0 };
                }
                group[k] = probe(p, source.node, h);
                group[7 + k] = probe(p, node.parent, h);
            }
        }
        if batch.probe_kinds & 2 != 0 {
            let axis = ((rand01(batch.seed, 34, index) * 3.0) as usize).min(2);
            let upper = rand01(batch.seed, 35, index) < 0.5;
            let mut face = source.pos;
            face[axis] = node.min[axis] + if upper { node.edge } else { 0.0 };
            let mut beyond = face;
            beyond[axis] += if upper { 0.25 } else { -0.25 } * node.edge;
            if beyond[axis].abs() < 1.0 {
                let other = octree.level_node(beyond, 0.0, node.depth);
                if octree.nodes[other as usize].depth == node.depth {
                    group[14] = probe(face, source.node, node.gsd);
                    group[15] = probe(face, other, node.gsd);
                }
            }
        }
    }
    out
}

/// loss_probes.wgsl's soft unit vector: (g / s, s) with s = sqrt(|g|^2 + eps^2).
fn soft_normal(g: [f64; 3]) -> ([f64; 3], f64) {
    let s = (g.iter().map(|v| v * v).sum::<f64>() + NORMAL_EPSILON * NORMAL_EPSILON).sqrt();
    (g.map(|v| v / s), s)
}

/// The three probe terms of one group, unweighted: (normal, density, seam) consistency, from the
/// (rgb, sigma) of its probes; a part whose first probe is NO_NODE is 0.
pub fn probe_group_terms(group: &[Sample], field: &[[f64; 4]]) -> [f64; 3] {
    let mut terms = [0.0; 3];
    if group[0].node != NO_NODE {
        let h = f64::from(group[0].delta);
        let a: Vec<f64> = (0..14).map(|k| 1.0 - (-field[k][3] * h).exp()).collect();
        let mean = a[..7].iter().sum::<f64>() / 7.0;
        terms[1] = (mean - a[7]).powi(2);
        let gradient = |o: usize| [0, 1, 2].map(|axis| a[o + 2 + 2 * axis] - a[o + 1 + 2 * axis]);
        let (child, _) = soft_normal(gradient(0));
        let (parent, _) = soft_normal(gradient(7));
        terms[0] = 1.0 - (0..3).map(|i| child[i] * parent[i]).sum::<f64>();
    }
    if group[14].node != NO_NODE {
        let h = f64::from(group[14].delta);
        let (a1, a2) = (1.0 - (-field[14][3] * h).exp(), 1.0 - (-field[15][3] * h).exp());
        let c = (0..3).map(|i| (field[14][i] - field[15][i]).powi(2)).sum::<f64>() / 3.0;
        terms[2] = (a1 - a2).powi(2) + 0.5 * (a1 + a2) * c;
    }
    terms
}

/// The weighted probe loss of a batch: sum over groups of the terms x their weights x inv_probes.
/// `probes` and `field` cover the probe slots only.
pub fn weighted_probe_loss(loss: &LossUniforms, probes: &[Sample], field: &[[f64; 4]]) -> f64 {
    let lambda = |t: usize| f64::from(loss.lambdas[t / 4][t % 4]);
    let weights = [lambda(TERM_NORMAL_CONSISTENCY), lambda(TERM_DENSITY_CONSISTENCY), lambda(TERM_SEAM)];
    probes
        .chunks(PROBES_PER_GROUP)
        .zip(field.chunks(PROBES_PER_GROUP))
        .map(|(group, f)| {
            let terms = probe_group_terms(group, f);
            (0..3).map(|t| terms[t] * weights[t]).sum::<f64>()
        })
        .sum::<f64>()
        * f64::from(loss.inv_probes)
}

/// loss_probes.wgsl: (dLoss/d(rgb, sigma) per probe, per group the values (normal, density, seam)
/// times inv_probes). The gradient is derived by hand, as the kernel's (tests/gradients.rs checks it
/// against finite differences of `weighted_probe_loss`).
pub fn loss_probes(loss: &LossUniforms, probes: &[Sample], field: &[[f64; 4]]) -> (Vec<[f64; 4]>, Vec<[f64; 3]>) {
    let lambda = |t: usize| f64::from(loss.lambdas[t / 4][t % 4]);
    let inv = f64::from(loss.inv_probes);
    let mut grads = vec![[0.0; 4]; probes.len()];
    let mut values = Vec::new();
    for (g, (group, f)) in probes.chunks(PROBES_PER_GROUP).zip(field.chunks(PROBES_PER_GROUP)).enumerate() {
        let grads = &mut grads[g * PROBES_PER_GROUP..(g + 1) * PROBES_PER_GROUP];
        if group[0].node != NO_NODE {
            let h = f64::from(group[0].delta);
            let a: Vec<f64> = (0..14).map(|k| 1.0 - (-f[k][3] * h).exp()).collect();
            let mut d_a = [0.0; 14];
            let e = a[..7].iter().sum::<f64>() / 7.0 - a[7];
            for d in &mut d_a[..7] {
                *d = lambda(TERM_DENSITY_CONSISTENCY) * 2.0 * e / 7.0;
            }
            d_a[7] = -lambda(TERM_DENSITY_CONSISTENCY) * 2.0 * e;
            let gradient = |o: usize| [0, 1, 2].map(|axis| a[o + 2 + 2 * axis] - a[o + 1 + 2 * axis]);
            let (child, s_child) = soft_normal(gradient(0));
            let (parent, s_parent) = soft_normal(gradient(7));
            let dot: f64 = (0..3).map(|i| child[i] * parent[i]).sum();
            for axis in 0..3 {
                let d_child = -lambda(TERM_NORMAL_CONSISTENCY) * (parent[axis] - child[axis] * dot) / s_child;
                let d_parent = -lambda(TERM_NORMAL_CONSISTENCY) * (child[axis] - parent[axis] * dot) / s_parent;
                d_a[2 + 2 * axis] += d_child;
                d_a[1 + 2 * axis] -= d_child;
                d_a[9 + 2 * axis] += d_parent;
                d_a[8 + 2 * axis] -= d_parent;
            }
            for k in 0..14 {
                grads[k][3] = d_a[k] * h * (-f[k][3] * h).exp() * inv;
            }
        }
        if group[14].node != NO_NODE {
            let h = f64::from(group[14].delta);
            let (a1, a2) = (1.0 - (-f[14][3] * h).exp(), 1.0 - (-f[15][3] * h).exp());
            let d: Vec<f64> = (0..3).map(|i| f[14][i] - f[15][i]).collect();
            let c = d.iter().map(|v| v * v).sum::<f64>() / 3.0;
            let m = 0.5 * (a1 + a2);
            let w = lambda(TERM_SEAM) * inv;
            grads[14][3] = w * (2.0 * (a1 - a2) + 0.5 * c) * h * (-f[14][3] * h).exp();
            grads[15][3] = w * (-2.0 * (a1 - a2) + 0.5 * c) * h * (-f[15][3] * h).exp();
            for i in 0..3 {
                grads[14][i] = w * m * 2.0 * d[i] / 3.0;
                grads[15][i] = -w * m * 2.0 * d[i] / 3.0;
            }
        }
        values.push(probe_group_terms(group, f).map(|v| v * inv));
    }
    (grads, values)
}

pub const TERM_LPIPS: usize = 10;

/// A convolution (+ ReLU) of LPIPS or the discriminator, channel-major, forward and backward by
/// scattering (the kernels gather).
pub mod conv {
    use infnerf::lpips::Conv;

    /// A convolution (+ ReLU when `relu`) of an n x n input.
    pub fn forward(c: &Conv, w: &[f64], b: &[f64], relu: bool, n: usize, x: &[f64]) -> Vec<f64> {
        let m = c.out_size(n as u32) as usize;
        let k = c.kernel as usize;
        let mut y = vec![0.0; c.out_channels as usize * m * m];
        for co in 0..c.out_channels as usize {
            for oy in 0..m {
                for ox in 0..m {
                    let mut sum = b[co];
                    for ci in 0..c.in_channels as usize {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * c.stride as usize + ky) as i64 - c.pad as i64;
                                let ix = (ox * c.stride as usize + kx) as i64 - c.pad as i64;
                                if iy >= 0 && ix >= 0 && iy < n as i64 && ix < n as i64 {
                                    sum += w[((co * c.in_channels as usize + ci) * k + ky) * k + kx]
                                        * x[(ci * n + iy as usize) * n + ix as usize];
                                }
                            }
                        }
                    }
                    y[(co * m + oy) * m + ox] = if relu { sum.max(0.0) } else { sum };
                }
            }
        }
        y
    }

    /// Its backward: (dL/dx, dL/dw, dL/db) from dL/dy, scattering.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        c: &Conv,
        w: &[f64],
        relu: bool,
        n: usize,
        x: &[f64],
        y: &[f64],
        gy: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let m = c.out_size(n as u32) as usize;
        let k = c.kernel as usize;
        let (mut gx, mut gw, mut gb) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; c.out_channels as usize]);
        for co in 0..c.out_channels as usize {
            for oy in 0..m {
                for ox in 0..m {
                    let o = (co * m + oy) * m + ox;
                    if relu && y[o] <= 0.0 {
                        continue;
                    }
                    gb[co] += gy[o];
                    for ci in 0..c.in_channels as usize {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * c.stride as usize + ky) as i64 - c.pad as i64;
                                let ix = (ox * c.stride as usize + kx) as i64 - c.pad as i64;
                                if iy >= 0 && ix >= 0 && iy < n as i64 && ix < n as i64 {
                                    let wi = ((co * c.in_channels as usize + ci) * k + ky) * k + kx;
                                    let xi = (ci * n + iy as usize) * n + ix as usize;
                                    gx[xi] += w[wi] * gy[o];
                                    gw[wi] += x[xi] * gy[o];
                                }
                            }
                        }
                    }
                }
            }
        }
        (gx, gw, gb)
    }
}

/// LPIPS (src/lpips.rs) in f64, one image at a time: a convolution and its ReLU, forward and
/// backward by scattering (the kernels gather), on channel-major tensors.
pub mod lpips {
    use infnerf::lpips::{self as net, Plan, Stage, CONVS, POOL_KERNEL, POOL_STRIDE};

    /// Every tensor of one image: tensor 0 is `input`.
    pub fn forward(weights: &[f64], plan: &Plan, input: &[f64]) -> Vec<Vec<f64>> {
        let o = net::weight_offsets();
        let mut tensors = vec![input.to_vec()];
        for stage in &plan.stages {
            let out = match *stage {
                Stage::Conv { conv, input, output: _ } => {
                    let (c, n) = (&CONVS[conv], plan.tensors[input].size as usize);
                    let w = &weights[o.weight[conv] as usize..o.weight[conv] as usize + c.weights()];
                    let b = &weights[o.bias[conv] as usize..o.bias[conv] as usize + c.out_channels as usize];
                    super::conv::forward(c, w, b, true, n, &tensors[input])
                }
                Stage::Pool { input, output } => {
                    let (i, t) = (plan.tensors[input], plan.tensors[output]);
                    let x = &tensors[input];
                    let mut y = vec![0.0; t.len() as usize];
                    for c in 0..t.channels as usize {
                        for oy in 0..t.size as usize {
                            for ox in 0..t.size as usize {
                                let (_, best) = pool_argmax(x, i.size as usize, c, oy, ox);
                                y[(c * t.size as usize + oy) * t.size as usize + ox] = best;
                            }
                        }
                    }
                    y
                }
            };
            tensors.push(out);
        }
        tensors
    }

    /// A pool window's first maximum in row order: (index in the tensor, value).
    fn pool_argmax(x: &[f64], n: usize, c: usize, oy: usize, ox: usize) -> (usize, f64) {
        let (k, s) = (POOL_KERNEL as usize, POOL_STRIDE as usize);
        let mut best = (0, f64::NEG_INFINITY);
        for ky in 0..k {
            for kx in 0..k {
                let i = (c * n + oy * s + ky) * n + ox * s + kx;
                if x[i] > best.1 {
                    best = (i, x[i]);
                }
            }
        }
        best
    }

    /// The distance of a render's tensors to its target's, and its gradient to every tensor of the
    /// render (the heads' share only).
    pub fn head(weights: &[f64], plan: &Plan, render: &[Vec<f64>], target: &[Vec<f64>]) -> (f64, Vec<Vec<f64>>) {
        const EPS: f64 = 1e-10;
        let o = net::weight_offsets();
        let mut grads: Vec<Vec<f64>> = render.iter().map(|t| vec![0.0; t.len()]).collect();
        let mut value = 0.0;
        for (l, &f) in plan.features.iter().enumerate() {
            let t = plan.tensors[f];
            let (channels, area) = (t.channels as usize, (t.size * t.size) as usize);
            for p in 0..area {
                let a: Vec<f64> = (0..channels).map(|c| render[f][c * area + p]).collect();
                let b: Vec<f64> = (0..channels).map(|c| target[f][c * area + p]).collect();
                let norm_a = a.iter().map(|v| v * v).sum::<f64>().sqrt();
                let norm_b = b.iter().map(|v| v * v).sum::<f64>().sqrt();
                let u: Vec<f64> = (0..channels).map(|c| a[c] / (norm_a + EPS) - b[c] / (norm_b + EPS)).collect();
                let w = |c: usize| weights[o.head[l] as usize + c];
                value += (0..channels).map(|c| w(c) * u[c] * u[c]).sum::<f64>() / area as f64;
                // through n = a / (|a| + eps): dn_c/da_j = delta_cj / s - a_c a_j / (|a| s^2)
                let g: Vec<f64> = (0..channels).map(|c| 2.0 * w(c) * u[c] / area as f64).collect();
                let s = norm_a + EPS;
                let g_dot_a: f64 = (0..channels).map(|c| g[c] * a[c]).sum();
                for j in 0..channels {
                    let radial = if norm_a > 0.0 { a[j] * g_dot_a / (norm_a * s * s) } else { 0.0 };
                    grads[f][j * area + p] = g[j] / s - radial;
                }
            }
        }
        (value, grads)
    }

    /// The backward of the stages: from the heads' gradients (`grads`, per tensor) to the input's.
    pub fn backward(weights: &[f64], plan: &Plan, tensors: &[Vec<f64>], mut grads: Vec<Vec<f64>>) -> Vec<f64> {
        let o = net::weight_offsets();
        for stage in plan.stages.iter().rev() {
            match *stage {
                Stage::Conv { conv, input, output } => {
                    let (c, n) = (&CONVS[conv], plan.tensors[input].size as usize);
                    let w = &weights[o.weight[conv] as usize..o.weight[conv] as usize + c.weights()];
                    let (gx, _, _) =
                        super::conv::backward(c, w, true, n, &tensors[input], &tensors[output], &grads[output]);
                    grads[input].iter_mut().zip(&gx).for_each(|(a, b)| *a += b);
                }
                Stage::Pool { input, output } => {
                    let (i, t) = (plan.tensors[input], plan.tensors[output]);
                    let m = t.size as usize;
                    for c in 0..t.channels as usize {
                        for oy in 0..m {
                            for ox in 0..m {
                                let (at, _) = pool_argmax(&tensors[input], i.size as usize, c, oy, ox);
                                grads[input][at] += grads[output][(c * m + oy) * m + ox];
                            }
                        }
                    }
                }
            }
        }
        grads.swap_remove(0)
    }

    /// The scaling layer: colour in [0, 1] -> the network's input.
    pub fn scaled(rgb: f64, channel: usize) -> f64 {
        (2.0 * rgb - 1.0 - f64::from(net::SHIFT[channel])) / f64::from(net::SCALE[channel])
    }

    /// LPIPS between two squares of colours (`[pixel][channel]`, rows of pixels; None: off the
    /// image, 0 in both), and its gradient to the render's colours.
    pub fn distance(
        weights: &[f64],
        plan: &Plan,
        render: &[Option<[f64; 3]>],
        target: &[Option<[f64; 3]>],
    ) -> (f64, Vec<[f64; 3]>) {
        let pixels = (plan.size * plan.size) as usize;
        let input = |square: &[Option<[f64; 3]>]| {
            let mut x = vec![0.0; 3 * pixels];
            for (p, rgb) in square.iter().enumerate() {
                if let Some(rgb) = rgb {
                    for c in 0..3 {
                        x[c * pixels + p] = scaled(rgb[c], c);
                    }
                }
            }
            x
        };
        let r = forward(weights, plan, &input(render));
        let t = forward(weights, plan, &input(target));
        let (value, grads) = head(weights, plan, &r, &t);
        let g0 = backward(weights, plan, &r, grads);
        let rgb = (0..pixels)
            .map(|p| {
                let on = render[p].is_some();
                [0, 1, 2].map(|c| if on { g0[c * pixels + p] * 2.0 / f64::from(net::SCALE[c]) } else { 0.0 })
            })
            .collect();
        (value, rgb)
    }
}

/// loss_lpips.wgsl over a chunk: (dLoss/d rgb per slot, the unweighted share per slot: each
/// square's distance x inv_squares at its top-left slot). The chunk's first `squares` squares are
/// its structure patches.
pub fn loss_lpips(
    batch: &Batch,
    loss: &LossUniforms,
    rays: &[Ray],
    outputs: &[Output],
    weights: &[f64],
    plan: &infnerf::lpips::Plan,
) -> (Vec<OutputGrad>, Vec<f64>) {
    let n_rays = batch.n_rays as usize;
    let m = batch.group_tiles as usize;
    let square_rays = m * m * (batch.patch_size * batch.patch_size) as usize;
    let squares = batch.grouped_patches as usize / (m * m);
    let size = plan.size as usize;
    let inv = f64::from(loss.inv_squares);
    let mut grads = vec![OutputGrad::default(); outputs.len()];
    let mut shares = vec![0.0; outputs.len()];
    for cut in 0..batch.n_cuts as usize {
        for square in 0..squares {
            let ray_at = |p: usize| structure_ray(batch, square * m * m, m, (p % size, p / size));
            let on = |ray: usize| rays[ray].target_rgb[3] > 0.0;
            let render: Vec<Option<[f64; 3]>> = (0..size * size)
                .map(|p| Some(ray_at(p)).filter(|&r| on(r)).map(|r| outputs[cut * n_rays + r].rgb))
                .collect();
            let target: Vec<Option<[f64; 3]>> = (0..size * size)
                .map(|p| Some(ray_at(p)).filter(|&r| on(r)).map(|r| rays[r].target_rgb.map(f64::from)))
                .map(|t| t.map(|t| [t[0], t[1], t[2]]))
                .collect();
            let (value, rgb) = lpips::distance(weights, plan, &render, &target);
            let top_left = cut * n_rays + ray_at(0);
            shares[top_left] = value * inv;
            let weight = term_weight(batch, loss, TERM_LPIPS, top_left);
            for (p, g) in rgb.iter().enumerate() {
                let slot = cut * n_rays + ray_at(p);
                for c in 0..3 {
                    grads[slot].rgb[c] += g[c] * inv * weight;
                }
            }
        }
    }
    debug_assert!(square_rays * squares <= n_rays);
    (grads, shares)
}

pub const TERM_ADVERSARIAL: usize = 11;
pub const TERM_DISCRIMINATOR: usize = 12;

/// The adversarial term's discriminator (src/adversarial.rs) in f64, one image at a time.
pub mod discriminator {
    use super::conv;
    use infnerf::adversarial::{offsets, sizes, CONVS};

    /// Every tensor of one image (input first, logits last) of a square of `size` pixels.
    pub fn forward(params: &[f64], size: u32, input: &[f64]) -> Vec<Vec<f64>> {
        let (weight, bias, _) = offsets();
        let edges = sizes(size);
        let mut tensors = vec![input.to_vec()];
        for (k, c) in CONVS.iter().enumerate() {
            let w = &params[weight[k] as usize..weight[k] as usize + c.weights()];
            let b = &params[bias[k] as usize..bias[k] as usize + c.out_channels as usize];
            let y = conv::forward(c, w, b, k + 1 < CONVS.len(), edges[k] as usize, &tensors[k]);
            tensors.push(y);
        }
        tensors
    }

    /// From dL/d(logits): (dL/d input, dL/d params).
    pub fn backward(params: &[f64], size: u32, tensors: &[Vec<f64>], grad_logits: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (weight, bias, total) = offsets();
        let edges = sizes(size);
        let mut grads = vec![0.0; total as usize];
        let mut g = grad_logits.to_vec();
        for (k, c) in CONVS.iter().enumerate().rev() {
            let w = &params[weight[k] as usize..weight[k] as usize + c.weights()];
            let (gx, gw, gb) =
                conv::backward(c, w, k + 1 < CONVS.len(), edges[k] as usize, &tensors[k], &tensors[k + 1], &g);
            grads[weight[k] as usize..weight[k] as usize + c.weights()].copy_from_slice(&gw);
            grads[bias[k] as usize..bias[k] as usize + c.out_channels as usize].copy_from_slice(&gb);
            g = gx;
        }
        (g, grads)
    }

    pub fn softplus(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    pub fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// The input of a square (`[pixel][channel]`, None off the image: 0): 2 x - 1.
    pub fn input(square: &[Option<[f64; 3]>]) -> Vec<f64> {
        let pixels = square.len();
        let mut x = vec![0.0; 3 * pixels];
        for (p, rgb) in square.iter().enumerate() {
            if let Some(rgb) = rgb {
                for c in 0..3 {
                    x[c * pixels + p] = 2.0 * rgb[c] - 1.0;
                }
            }
        }
        x
    }
}

/// The adversarial passes over a chunk (`loss_patch_net` with the discriminator): (dLoss/d rgb per
/// slot, the generator's unweighted share per slot, the discriminator's per slot, the
/// discriminator's gradient). The generator's loss is the mean over the logits of softplus(-l) of a
/// render; the discriminator's the mean over the chunk's targets of softplus(-l) plus the mean over
/// its renders of softplus(l).
pub fn loss_adversarial(
    batch: &Batch,
    loss: &LossUniforms,
    rays: &[Ray],
    outputs: &[Output],
    params: &[f64],
    size: u32,
) -> (Vec<OutputGrad>, Vec<f64>, Vec<f64>, Vec<f64>) {
    use discriminator as d;
    let n_rays = batch.n_rays as usize;
    let m = batch.group_tiles as usize;
    let squares = batch.grouped_patches as usize / (m * m);
    let cuts = batch.n_cuts as usize;
    let s = size as usize;
    let inv = f64::from(loss.inv_squares);
    let mut grads = vec![OutputGrad::default(); outputs.len()];
    let mut gen = vec![0.0; outputs.len()];
    let mut disc = vec![0.0; outputs.len()];
    let mut disc_grad = vec![0.0; params.len()];
    for square in 0..squares {
        let ray_at = |p: usize| structure_ray(batch, square * m * m, m, (p % s, p / s));
        let on = |ray: usize| rays[ray].target_rgb[3] > 0.0;
        let target: Vec<Option<[f64; 3]>> = (0..s * s)
            .map(|p| Some(ray_at(p)).filter(|&r| on(r)).map(|r| [0, 1, 2].map(|c| f64::from(rays[r].target_rgb[c]))))
            .collect();
        let t = d::forward(params, size, &d::input(&target));
        let logits = t.last().unwrap();
        let n = logits.len() as f64;
        let real: f64 = logits.iter().map(|&l| d::softplus(-l)).sum::<f64>() / n;
        let g: Vec<f64> = logits.iter().map(|&l| -d::sigmoid(-l) / n / squares as f64).collect();
        let (_, gp) = d::backward(params, size, &t, &g);
        disc_grad.iter_mut().zip(&gp).for_each(|(a, b)| *a += b);
        let mut fake_mean = 0.0;
        for cut in 0..cuts {
            let render: Vec<Option<[f64; 3]>> =
                (0..s * s).map(|p| Some(ray_at(p)).filter(|&r| on(r)).map(|r| outputs[cut * n_rays + r].rgb)).collect();
            let t = d::forward(params, size, &d::input(&render));
            let logits = t.last().unwrap();
            let top_left = cut * n_rays + ray_at(0);
            gen[top_left] = logits.iter().map(|&l| d::softplus(-l)).sum::<f64>() / n * inv;
            fake_mean += logits.iter().map(|&l| d::softplus(l)).sum::<f64>() / n / cuts as f64;
            // the generator's gradient through the discriminator to the colours (d x / d rgb = 2)
            let g: Vec<f64> = logits.iter().map(|&l| -d::sigmoid(-l) / n).collect();
            let (gx, _) = d::backward(params, size, &t, &g);
            let weight = term_weight(batch, loss, TERM_ADVERSARIAL, top_left);
            for p in 0..s * s {
                if render[p].is_some() {
                    for c in 0..3 {
                        grads[cut * n_rays + ray_at(p)].rgb[c] += 2.0 * gx[c * s * s + p] * inv * weight;
                    }
                }
            }
            // the discriminator's gradient on the render
            let g: Vec<f64> = logits.iter().map(|&l| d::sigmoid(l) / n / (squares * cuts) as f64).collect();
            let (_, gp) = d::backward(params, size, &t, &g);
            disc_grad.iter_mut().zip(&gp).for_each(|(a, b)| *a += b);
        }
        disc[ray_at(0)] = (real + fake_mean) * inv;
    }
    (grads, gen, disc, disc_grad)
}

/// The f16 nearest to `x` (ties to even), as an f32: what a conversion to f16 stores. Values
/// beyond the largest finite f16 are clamped to it first, as the kernels clamp them.
pub fn round_f16(x: f32) -> f32 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = f64::from(x.abs()).min(65504.0);
    // the spacing of f16 values around `a`: 2^-24 among the subnormals, else 2^(exponent - 10)
    let quantum = if a < (-14f64).exp2() { (-24f64).exp2() } else { (a.log2().floor() - 10.0).exp2() };
    let rounded = (a / quantum).round_ties_even() * quantum;
    (rounded as f32).copysign(x)
}

/// The value of the f16 with bits `h`.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((h >> 10) & 0x1f);
    let mantissa = f64::from(h & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * (-24f64).exp2(),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + mantissa / 1024.0) * f64::from(e - 15).exp2(),
    };
    (sign * magnitude) as f32
}

/// `params` (node after node) with every hash-table entry rounded to f16: what the field passes read
/// under mixed precision.
pub fn with_f16_tables(layout: &FieldLayout, params: &[f32]) -> Vec<f32> {
    let (node, hash) = (layout.node_params as usize, layout.hash_params as usize);
    params.iter().enumerate().map(|(i, &p)| if i % node < hash { round_f16(p) } else { p }).collect()
}
