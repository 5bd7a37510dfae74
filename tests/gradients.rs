//! Central finite differences of the CPU references against their analytic backward passes (which
//! tests/kernels.rs compares the kernels with). Relative error <= 1e-3, with the floor of each
//! comparison scaled to the gradient tensor it belongs to. CPU only.

mod common;

use common::random_dataset;
use common::reference::{self as cpu, Output, OutputGrad};
use infnerf::config::Config;
use infnerf::field::{FieldLayout, SplitMix64};
use infnerf::gpu::records::{Batch, GpuCamera, LossUniforms, Patch, Ray, Sample, Sampling, MAX_CUTS};
use infnerf::octree::Octree;
use std::collections::BTreeSet;

const H: f64 = 1e-6;

/// Fails unless `analytic` and `numeric` agree to 1e-3 relative; gradients below 1% of `scale` (the
/// largest of their tensor) are compared to 1e-3 of that floor instead.
fn check(name: &str, analytic: f64, numeric: f64, scale: f64) -> f64 {
    if analytic == numeric {
        return 0.0;
    }
    let err = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-2 * scale);
    assert!(err <= 1e-3, "{name}: analytic {analytic:e} numeric {numeric:e} relative error {err:e} (scale {scale:e})");
    err
}

fn central(mut f: impl FnMut(f64) -> f64, at: f64) -> f64 {
    (f(at + H) - f(at - H)) / (2.0 * H)
}

/// Checks an analytic dLoss/d colour per slot against central differences of `loss` over every slot
/// and channel (tolerance scaled to the largest analytic value); returns, per slot, how many channels
/// have a numeric gradient other than 0.
fn check_colour_gradients(
    outputs: &mut [Output],
    analytic: &[[f64; 3]],
    loss: impl Fn(&[Output]) -> f64,
) -> Vec<usize> {
    let scale = analytic.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    (0..outputs.len())
        .map(|slot| {
            let mut nonzero = 0;
            for (c, &want) in analytic[slot].iter().enumerate() {
                let keep = outputs[slot].rgb[c];
                let numeric = central(
                    |v| {
                        outputs[slot].rgb[c] = v;
                        loss(outputs)
                    },
                    keep,
                );
                outputs[slot].rgb[c] = keep;
                check(&format!("slot {slot} channel {c}"), want, numeric, scale);
                nonzero += usize::from(numeric != 0.0);
            }
            nonzero
        })
        .collect()
}

/// Rays and samples of a small two-cut batch from the references of the rays and samples passes: 32
/// rays of 16 samples on a depth-2 tree, cuts 2 and 1 weighted 0.6 and 0.4.
struct Scene {
    layout: FieldLayout,
    octree: Octree,
    batch: Batch,
    rays: Vec<Ray>,
    samples: Vec<Sample>,
    loss: LossUniforms,
    max_density: f64,
}

fn scene() -> Scene {
    let dataset = random_dataset(3, 16, 21);
    let mut config = Config::tiny();
    config.field.max_depth = 2;
    config.field.finest_resolution = 16;
    let cameras: Vec<_> = dataset.train.iter().map(|v| v.camera).collect();
    let octree = Octree::build(&cameras, config.field.max_depth, config.field.finest_resolution);
    let gpu_cameras: Vec<GpuCamera> = cameras.iter().map(GpuCamera::from).collect();
    let patches = [Patch { view: 0, level: 0, x0: 5, y0: 6 }, Patch { view: 2, level: 1, x0: 2, y0: 1 }];
    let mut cuts = [0; MAX_CUTS];
    cuts[..2].copy_from_slice(&[2, 1]);
    let batch = Batch {
        n_rays: 32,
        samples_per_ray: 16,
        n_cuts: 2,
        seed: 99,
        training: 1,
        patch_size: 4,
        ray_offset: 0,
        view: 0,
        cuts,
        background: [1.0; 3],
        random_background: 1,
        group_tiles: 1,
        grouped_patches: 0,
        probe_groups: 0,
        probe_kinds: 0,
    };
    let mut rng = SplitMix64(4);
    let targets: Vec<u32> = (0..batch.n_rays).map(|_| rng.next_u64() as u32).collect();
    let rays = cpu::rays(&batch, &gpu_cameras, &patches, &targets);
    let valid = rays.iter().filter(|r| r.target_rgb[3] > 0.0).count();
    let sampling = Sampling { resolution: 16, ..Default::default() };
    let samples = cpu::samples(&batch, &sampling, &rays, &octree, &[], 0.0);
    let loss = LossUniforms {
        inv_count: 1.0 / (3.0 * valid as f32),
        lambdas: [[0.7, 0.0, 0.0, 0.0], [0.0; 4], [0.0; 4], [0.0; 4]],
        cut_weights: [0.6, 0.4, 0.0, 0.0],
        ..Default::default()
    };
    let layout = FieldLayout::new(&config.field);
    Scene { layout, octree, batch, rays, samples, loss, max_density: f64::from(config.field.max_density) }
}

impl Scene {
    fn active(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.samples.len()).filter(|&s| self.samples[s].node != cpu::NO_NODE)
    }

    /// Random (rgb, sigma) per sample: densities up to 40 in every fourth slot (real occlusion over
    /// deltas of ~0.2), up to 2 in the others (light stays: the opacity and background matter).
    fn random_field(&self, seed: u64) -> Vec<[f64; 4]> {
        let mut rng = SplitMix64(seed);
        let n = self.batch.samples_per_ray as usize;
        (0..self.samples.len())
            .map(|s| {
                let max_sigma = if (s / n).is_multiple_of(4) { 40.0 } else { 2.0 };
                [0, 1, 2, 3].map(|k| f64::from(rng.next_f32()) * if k == 3 { max_sigma } else { 1.0 })
            })
            .collect()
    }

    fn slots(&self) -> usize {
        cpu::slots(&self.batch)
    }
}

/// Σ over slots of g · (rgb, opacity, depth): the loss whose gradient per slot is `g`.
fn linear_loss(outputs: &[Output], grads: &[OutputGrad]) -> f64 {
    outputs
        .iter()
        .zip(grads)
        .map(|(o, g)| (0..3).map(|c| o.rgb[c] * g.rgb[c]).sum::<f64>() + o.opacity * g.opacity + o.depth * g.depth)
        .sum()
}

/// render_backward against finite differences of render_forward, for dLoss/d(colour), d(opacity)
/// and d(depth) each alone, so an error in one term cannot hide behind another.
#[test]
fn render_backward_matches_finite_differences_for_each_output() {
    let scene = scene();
    let mut field = scene.random_field(3);
    let mut rng = SplitMix64(8);
    let mut value = || f64::from(rng.next_f32()) * 2.0 - 1.0;
    for output in ["rgb", "opacity", "depth"] {
        let grads: Vec<OutputGrad> = (0..scene.slots())
            .map(|_| match output {
                "rgb" => OutputGrad { rgb: [value(), value(), value()], ..Default::default() },
                "opacity" => OutputGrad { opacity: value(), ..Default::default() },
                _ => OutputGrad { depth: value(), ..Default::default() },
            })
            .collect();
        let loss =
            |f: &[[f64; 4]]| linear_loss(&cpu::render_forward(&scene.batch, &scene.rays, &scene.samples, f), &grads);
        let outputs = cpu::render_forward(&scene.batch, &scene.rays, &scene.samples, &field);
        let analytic = cpu::render_backward(&scene.batch, &scene.samples, &field, &outputs, &grads);
        // one scale for the colour channels, one for the density
        let scale =
            |ks: &[usize]| analytic.iter().flat_map(|g| ks.iter().map(move |&k| g[k].abs())).fold(0.0, f64::max);
        let scales = [scale(&[0, 1, 2]), scale(&[3])];
        assert!(scales[1] > 0.0, "{output}: no density gradient");
        let mut checked = 0;
        for s in scene.active().step_by(3) {
            for k in 0..4 {
                let keep = field[s][k];
                let numeric = central(
                    |v| {
                        field[s][k] = v;
                        loss(&field)
                    },
                    keep,
                );
                field[s][k] = keep;
                let name = format!("{output}: sample {s} channel {k}");
                check(&name, analytic[s][k], numeric, scales[usize::from(k == 3)]);
                checked += 1;
            }
        }
        assert!(checked > 600, "{output}: only {checked} entries checked");
    }
}

/// loss_mse's dLoss/d(colour) per slot against finite differences of the weighted loss (lambda and
/// the cuts' weights included); it has no opacity or depth gradient.
#[test]
fn loss_mse_matches_finite_differences() {
    let scene = scene();
    let mut rng = SplitMix64(12);
    let mut outputs: Vec<Output> = (0..scene.slots())
        .map(|_| Output { rgb: [0, 1, 2].map(|_| f64::from(rng.next_f32())), ..Default::default() })
        .collect();
    let (grads, _) = cpu::loss_mse(&scene.batch, &scene.loss, &scene.rays, &outputs);
    assert!(grads.iter().all(|g| g.opacity == 0.0 && g.depth == 0.0));
    let n_rays = scene.batch.n_rays as usize;
    let analytic: Vec<[f64; 3]> = grads.iter().map(|g| g.rgb).collect();
    let nonzero = check_colour_gradients(&mut outputs, &analytic, |o| {
        cpu::weighted_mse(&scene.batch, &scene.loss, &scene.rays, o)
    });
    let mut per_cut = [0; 2];
    for (slot, n) in nonzero.iter().enumerate() {
        per_cut[slot / n_rays] += n;
    }
    // rays off their image (weight 0) have no gradient; the others at both cuts do
    assert!(per_cut.iter().all(|&n| n > 30), "{per_cut:?}");
}

/// loss_tv's dLoss/d(colour, depth) per slot against finite differences of the weighted total
/// variation (its two lambdas and the cuts' weights included); it has no opacity gradient.
#[test]
fn loss_tv_matches_finite_differences() {
    let mut scene = scene();
    scene.loss.lambdas[0][cpu::TERM_TV] = 0.3;
    scene.loss.lambdas[0][cpu::TERM_TV_DEPTH] = 0.2;
    scene.loss.inv_pairs = 1.0 / 41.0;
    assert!(scene.batch.patch_size >= 2);
    let mut rng = SplitMix64(13);
    let mut outputs: Vec<Output> = (0..scene.slots())
        .map(|_| Output {
            rgb: [0, 1, 2].map(|_| f64::from(rng.next_f32())),
            depth: f64::from(rng.next_f32()) * 3.0,
            ..Default::default()
        })
        .collect();
    let (grads, _) = cpu::loss_tv(&scene.batch, &scene.loss, &scene.rays, &outputs);
    assert!(grads.iter().all(|g| g.opacity == 0.0));
    let scale = |pick: fn(&OutputGrad) -> f64| grads.iter().map(pick).fold(0.0f64, |m, v| m.max(v.abs()));
    let scales = [scale(|g| g.rgb[0]), scale(|g| g.depth)];
    assert!(scales.iter().all(|&s| s > 0.0));
    let mut nonzero = 0;
    for slot in 0..scene.slots() {
        for k in 0..4 {
            fn value(o: &mut Output, k: usize) -> &mut f64 {
                if k < 3 {
                    &mut o.rgb[k]
                } else {
                    &mut o.depth
                }
            }
            let keep = *value(&mut outputs[slot], k);
            let numeric = central(
                |v| {
                    *value(&mut outputs[slot], k) = v;
                    cpu::weighted_tv(&scene.batch, &scene.loss, &scene.rays, &outputs)
                },
                keep,
            );
            *value(&mut outputs[slot], k) = keep;
            let analytic = if k < 3 { grads[slot].rgb[k] } else { grads[slot].depth };
            check(&format!("slot {slot} output {k}"), analytic, numeric, scales[usize::from(k == 3)]);
            nonzero += usize::from(numeric != 0.0);
        }
    }
    assert!(nonzero > scene.slots(), "{nonzero} outputs with a gradient");
}

/// Random colours in [0, 1] and depths in [0, 3) per slot.
fn random_outputs(scene: &Scene, seed: u64) -> Vec<Output> {
    let mut rng = SplitMix64(seed);
    (0..scene.slots())
        .map(|_| Output {
            rgb: [0, 1, 2].map(|_| f64::from(rng.next_f32())),
            depth: f64::from(rng.next_f32()) * 3.0,
            ..Default::default()
        })
        .collect()
}

/// loss_ssim's dLoss/d colour per slot against finite differences of the weighted 1 - SSIM (3 x 3
/// windows in 4 x 4 patches: every pixel is in one to four windows).
#[test]
fn loss_ssim_matches_finite_differences() {
    let mut scene = scene();
    scene.loss.lambdas[cpu::TERM_SSIM / 4][cpu::TERM_SSIM % 4] = 0.5;
    scene.loss.ssim_window = 3;
    scene.loss.inv_windows = 1.0 / (3.0 * 16.0);
    let mut outputs = random_outputs(&scene, 17);
    // some windows close to the targets, where SSIM is near 1 and its gradient small
    for slot in (0..scene.slots()).step_by(3) {
        let target = scene.rays[slot % scene.batch.n_rays as usize].target_rgb;
        outputs[slot].rgb = [0, 1, 2].map(|c| f64::from(target[c]) + 0.01 * outputs[slot].rgb[c]);
    }
    let (grads, shares) = cpu::loss_ssim(&scene.batch, &scene.loss, &scene.rays, &outputs);
    assert!(shares.iter().sum::<f64>() > 0.0);
    assert!(grads.iter().all(|g| g.depth == 0.0 && g.opacity == 0.0));
    let analytic: Vec<[f64; 3]> = grads.iter().map(|g| g.rgb).collect();
    let nonzero: usize = check_colour_gradients(&mut outputs, &analytic, |o| {
        cpu::weighted_ssim(&scene.batch, &scene.loss, &scene.rays, o)
    })
    .iter()
    .sum();
    // every pixel of every patch is in a window, at both cuts
    assert_eq!(nonzero, 3 * scene.slots());
}

/// loss_depth_consistency's dLoss/d depth per slot against finite differences of the weighted smooth
/// L1 between cut 1 (coarse) and cut 2 (its finer partner), differences on both sides of the threshold.
#[test]
fn loss_depth_consistency_matches_finite_differences() {
    let mut scene = scene();
    let term = cpu::TERM_DEPTH_CONSISTENCY;
    scene.loss.lambdas[term / 4][term % 4] = 0.3;
    scene.loss.finer_cut = infnerf::trainer::finer_cuts(&scene.batch.cuts[..scene.batch.n_cuts as usize]);
    assert_eq!(scene.loss.finer_cut[..2], [infnerf::gpu::records::NO_CUT, 0]);
    scene.loss.huber_delta = 0.5;
    scene.loss.inv_rays = 1.0 / 32.0;
    let mut outputs = random_outputs(&scene, 19);
    let (grads, shares) = cpu::loss_depth_consistency(&scene.batch, &scene.loss, &scene.rays, &outputs);
    let n_rays = scene.batch.n_rays as usize;
    // values at the coarse cut's slots only; both regimes of the smooth L1 occur
    assert!(shares[..n_rays].iter().all(|&v| v == 0.0) && shares[n_rays..].iter().all(|&v| v > 0.0));
    let d = |r: usize| (outputs[n_rays + r].depth - outputs[r].depth).abs();
    assert!((0..n_rays).any(|r| d(r) < 0.5) && (0..n_rays).any(|r| d(r) > 0.5));
    let scale = grads.iter().fold(0.0f64, |m, g| m.max(g.depth.abs()));
    for slot in 0..scene.slots() {
        let keep = outputs[slot].depth;
        let numeric = central(
            |v| {
                outputs[slot].depth = v;
                cpu::weighted_depth_consistency(&scene.batch, &scene.loss, &scene.rays, &outputs)
            },
            keep,
        );
        outputs[slot].depth = keep;
        check(&format!("slot {slot}"), grads[slot].depth, numeric, scale);
        assert!(numeric != 0.0, "slot {slot} has no gradient");
    }
}

/// `scene()` with 2 x 2 patches, the first four the tiles of one 4 x 4 structure patch (row by row),
/// the other four alone: 32 rays.
fn structured_scene() -> Scene {
    let mut scene = scene();
    let dataset = random_dataset(3, 16, 21);
    let cameras: Vec<GpuCamera> = dataset.train.iter().map(|v| GpuCamera::from(&v.camera)).collect();
    let mut patches: Vec<Patch> = [(0, 0), (2, 0), (0, 2), (2, 2)]
        .iter()
        .map(|&(dx, dy)| Patch { view: 1, level: 0, x0: 9 + dx, y0: 3 + dy })
        .collect();
    patches.extend([(0, 0, 1, 1), (2, 1, 4, 4), (1, 0, 10, 12), (0, 1, 5, 0)].map(|(view, level, x0, y0)| Patch {
        view,
        level,
        x0,
        y0,
    }));
    scene.batch.patch_size = 2;
    scene.batch.group_tiles = 2;
    scene.batch.grouped_patches = 4;
    let mut rng = SplitMix64(5);
    let targets: Vec<u32> = (0..scene.batch.n_rays).map(|_| rng.next_u64() as u32).collect();
    scene.rays = cpu::rays(&scene.batch, &cameras, &patches, &targets);
    assert!(scene.rays.iter().all(|r| r.target_rgb[3] > 0.0));
    scene
}

/// TV and SSIM across the tiles of a structure patch: pairs and windows that span tiles, against
/// finite differences (3 x 3 windows: only the 4 x 4 structure patch holds any).
#[test]
fn structure_patches_join_their_tiles_for_tv_and_ssim() {
    let mut scene = structured_scene();
    scene.loss.lambdas[0][cpu::TERM_TV] = 0.3;
    scene.loss.lambdas[0][cpu::TERM_TV_DEPTH] = 0.2;
    scene.loss.lambdas[cpu::TERM_SSIM / 4][cpu::TERM_SSIM % 4] = 0.5;
    scene.loss.ssim_window = 3;
    scene.loss.inv_pairs = 1.0 / 37.0;
    scene.loss.inv_windows = 1.0 / 12.0;
    let mut outputs = random_outputs(&scene, 23);
    let (tv_grads, [tv, _]) = cpu::loss_tv(&scene.batch, &scene.loss, &scene.rays, &outputs);
    let (ssim_grads, ssim) = cpu::loss_ssim(&scene.batch, &scene.loss, &scene.rays, &outputs);
    // pairs to the right and below: 2 x 4 x 3 in the structure patch, 2 x 2 x 1 in each lone patch
    let pairs = tv.iter().filter(|&&v| v > 0.0).count();
    assert!(pairs >= 24, "{pairs} slots with a pair");
    // windows: 2 x 2 top-left corners in the structure patch per cut, none in the lone ones
    assert_eq!(ssim.iter().filter(|&&v| v != 0.0).count(), 2 * 4);
    let analytic: Vec<[f64; 3]> =
        tv_grads.iter().zip(&ssim_grads).map(|(a, b)| [0, 1, 2].map(|c| a.rgb[c] + b.rgb[c])).collect();
    check_colour_gradients(&mut outputs, &analytic, |o| {
        cpu::weighted_tv(&scene.batch, &scene.loss, &scene.rays, o)
            + cpu::weighted_ssim(&scene.batch, &scene.loss, &scene.rays, o)
    });
    // every pixel of the 4 x 4 structure patch (its first 16 rays) lies in a 3 x 3 window, which spans
    // tiles: each has an SSIM gradient, at both cuts
    let n_rays = scene.batch.n_rays as usize;
    let in_windows = (0..scene.slots()).filter(|&slot| slot % n_rays < 16 && ssim_grads[slot].rgb[0] != 0.0).count();
    assert_eq!(in_windows, 2 * 16);
}

/// The parameter L2's gradient as Adam applies it, l2 x p with l2 = 2 x weight / N (the trainer's
/// `adam_uniforms`), against finite differences of weight x mean(p^2).
#[test]
fn parameter_l2_matches_finite_differences() {
    let mut rng = SplitMix64(31);
    let mut params: Vec<f64> = (0..200).map(|_| f64::from(rng.next_f32()) * 2.0 - 1.0).collect();
    let weight = 0.3;
    let l2 = 2.0 * weight / params.len() as f64;
    let scale = params.iter().fold(0.0f64, |m, p| m.max((l2 * p).abs()));
    for i in 0..params.len() {
        let keep = params[i];
        let numeric = central(
            |v| {
                params[i] = v;
                cpu::param_l2(weight, &params)
            },
            keep,
        );
        params[i] = keep;
        check(&format!("parameter {i}"), l2 * params[i], numeric, scale);
    }
}

/// loss_sparsity's dLoss/d sigma per sample against finite differences of the weighted mean density.
#[test]
fn loss_sparsity_matches_finite_differences() {
    let mut scene = scene();
    scene.loss.lambdas[0][cpu::TERM_SPARSITY] = 0.05;
    scene.loss.inv_samples = 1.0 / (scene.samples.len() as f32);
    let mut field = scene.random_field(5);
    let n_rays = scene.batch.n_rays as usize;
    let n = scene.batch.samples_per_ray as usize;
    let weighted = |field: &[[f64; 4]]| {
        let (_, shares) = cpu::loss_sparsity(&scene.batch, &scene.loss, &scene.samples, field);
        let weight =
            |slot: usize| f64::from(scene.loss.lambdas[0][cpu::TERM_SPARSITY] * scene.loss.cut_weights[slot / n_rays]);
        shares.iter().enumerate().map(|(slot, v)| v * weight(slot)).sum::<f64>()
    };
    let (grads, _) = cpu::loss_sparsity(&scene.batch, &scene.loss, &scene.samples, &field);
    let scale = grads.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    let mut checked = 0;
    for s in (0..scene.samples.len()).step_by(3) {
        let keep = field[s][3];
        let numeric = central(
            |v| {
                field[s][3] = v;
                weighted(&field)
            },
            keep,
        );
        field[s][3] = keep;
        check(&format!("sample {s} (slot {})", s / n), grads[s], numeric, scale);
        checked += usize::from(numeric != 0.0);
    }
    assert!(checked > 50, "{checked} samples with a gradient");
}

/// The whole chain, params -> field -> render (two cuts) -> weighted MSE plus linear opacity and depth
/// terms, against field_backward(render_backward(loss_mse + those terms)): sampled entries of every
/// decoder tensor of every used node and of every hash level, each against its tensor's own scale.
#[test]
fn whole_chain_matches_finite_differences() {
    let scene = scene();
    let (layout, octree, samples, rays) = (&scene.layout, &scene.octree, &scene.samples, &scene.rays);
    let mut rng = SplitMix64(17);
    let block = layout.node_params as usize;
    let mut params: Vec<f64> = (0..octree.nodes.len() * block)
        .map(|i| {
            f64::from(rng.next_f32() * 2.0 - 1.0) * if i % block < layout.hash_params as usize { 1.0 } else { 0.5 }
        })
        .collect();
    let extra: Vec<OutputGrad> = (0..scene.slots())
        .map(|_| OutputGrad {
            opacity: f64::from(rng.next_f32() - 0.5) * 1e-2,
            depth: f64::from(rng.next_f32() - 0.5) * 1e-2,
            ..Default::default()
        })
        .collect();
    let field = cpu::field_forward(layout, &params, octree, samples, rays, scene.max_density);
    // the loss of the slots `slots` (the others do not change with a node's parameters: leaving them
    // out keeps the rounding noise of the differences small)
    let n_rays = scene.batch.n_rays as usize;
    let loss = |field: &[[f64; 4]], slots: &BTreeSet<usize>| {
        let outputs = cpu::render_forward(&scene.batch, rays, samples, field);
        let (_, shares) = cpu::loss_mse(&scene.batch, &scene.loss, rays, &outputs);
        let weight = |slot: usize| f64::from(scene.loss.lambdas[0][0] * scene.loss.cut_weights[slot / n_rays]);
        let mse: f64 = slots.iter().map(|&slot| shares[slot] * weight(slot)).sum();
        let linear: f64 = slots.iter().map(|&slot| linear_loss(&outputs[slot..=slot], &extra[slot..=slot])).sum();
        mse + linear
    };

    // analytic: loss_mse plus the extra terms -> render_backward -> field_backward
    let outputs = cpu::render_forward(&scene.batch, rays, samples, &field);
    let (mse_grads, _) = cpu::loss_mse(&scene.batch, &scene.loss, rays, &outputs);
    let ray_grads: Vec<OutputGrad> =
        mse_grads.iter().zip(&extra).map(|(m, e)| OutputGrad { rgb: m.rgb, ..*e }).collect();
    let sample_grads = cpu::render_backward(&scene.batch, samples, &field, &outputs, &ray_grads);
    let grads = cpu::field_backward(layout, &params, octree, samples, rays, &sample_grads, scene.max_density);

    // the density's clamps pass gradients straight through: keep every sample inside them
    for s in scene.active() {
        let sample = &samples[s];
        let local = cpu::node_local(octree, sample.node, sample.pos);
        let dir = rays[sample.ray as usize].dir.map(f64::from);
        let raw = cpu::field_eval(layout, &params, sample.node, local, dir, scene.max_density).out1[0];
        assert!(raw.abs() < 15.0 && raw.exp() < scene.max_density, "sample {s} is clamped (raw {raw})");
    }

    let used: BTreeSet<u32> = scene.active().map(|s| samples[s].node).collect();
    let depths: BTreeSet<u32> = used.iter().map(|&n| octree.nodes[n as usize].depth).collect();
    assert!(used.len() >= 8 && depths.len() >= 2, "samples should reach several nodes and depths: {used:?}");
    let mut checked = 0;
    let mut worst = 0.0f64;
    for &node in &used {
        // perturbing a node's parameters changes only its samples' field values
        let of_node: Vec<usize> = scene.active().filter(|&s| samples[s].node == node).collect();
        let slots: BTreeSet<usize> = of_node.iter().map(|&s| s / scene.batch.samples_per_ray as usize).collect();
        let base = node as usize * block;
        for tensor in cpu::tensors(layout) {
            let range = base + tensor.range.start..base + tensor.range.end;
            let scale = grads[range.clone()].iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(scale > 0.0, "node {node} {} has no gradient", tensor.name);
            // the three largest gradients and three other entries with a gradient of the tensor
            let mut entries: Vec<usize> = range.clone().filter(|&i| grads[i] != 0.0).collect();
            entries.sort_by(|&a, &b| grads[b].abs().total_cmp(&grads[a].abs()));
            let mut chosen: Vec<usize> = entries.iter().take(3).copied().collect();
            let rest = &entries[chosen.len()..];
            for k in 0..3.min(rest.len()) {
                chosen.push(rest[(k * 7919 + node as usize * 31) % rest.len()]);
            }
            for i in chosen {
                let keep = params[i];
                let mut perturbed = field.clone();
                let numeric = central(
                    |v| {
                        params[i] = v;
                        for &s in &of_node {
                            let f =
                                cpu::field_forward(layout, &params, octree, &samples[s..=s], rays, scene.max_density);
                            perturbed[s] = f[0];
                        }
                        loss(&perturbed, &slots)
                    },
                    keep,
                );
                params[i] = keep;
                let name = format!("node {node} {} entry {}", tensor.name, i - range.start);
                worst = worst.max(check(&name, grads[i], numeric, scale));
                checked += 1;
            }
        }
    }
    eprintln!("{checked} parameters of {} nodes checked, worst relative error {worst:.1e}", used.len());
}

/// loss_probes' dLoss/d(rgb, sigma) per probe against finite differences of the weighted normal,
/// density and seam terms: groups with a stencil, a seam or both, opacities from nearly 0 to nearly 1
/// over their steps (so the soft normals go from flat, |g| << eps, to steep).
#[test]
fn loss_probes_matches_finite_differences() {
    let mut loss = LossUniforms { inv_probes: 1.0 / 6.0, ..Default::default() };
    for (term, lambda) in
        [(cpu::TERM_NORMAL_CONSISTENCY, 0.3), (cpu::TERM_DENSITY_CONSISTENCY, 0.7), (cpu::TERM_SEAM, 0.5)]
    {
        loss.lambdas[term / 4][term % 4] = lambda;
    }
    let mut rng = SplitMix64(31);
    let n = cpu::PROBES_PER_GROUP;
    let mut probes = Vec::new();
    let mut field = Vec::new();
    for g in 0..6 {
        let h = 0.02 + 0.05 * rng.next_f32();
        // groups 0..4 have a stencil, 2..6 a seam; group 1's stencil is nearly flat (low densities)
        let stencil = g < 4;
        let seam = g >= 2;
        let sigma_scale = if g == 1 { 0.5 } else { 60.0 };
        for k in 0..n {
            let made = if k < 14 { stencil } else { seam };
            probes.push(Sample { node: if made { 1 } else { cpu::NO_NODE }, delta: h, ..Default::default() });
            let sigma = f64::from(rng.next_f32()) * sigma_scale;
            field.push([0, 1, 2].map(|_| f64::from(rng.next_f32())).into_iter().chain([sigma]).collect::<Vec<_>>());
        }
    }
    let mut field: Vec<[f64; 4]> = field.into_iter().map(|v| [v[0], v[1], v[2], v[3]]).collect();
    let (grads, values) = cpu::loss_probes(&loss, &probes, &field);
    assert!(values.iter().all(|v| v.iter().all(|x| x.is_finite())));
    assert!(values[1][0] > 0.0 && values[4][2] > 0.0 && values[0][2] == 0.0 && values[5][0] == 0.0);
    for (part, range) in [("sigma", 3..4), ("rgb", 0..3)] {
        let scale = grads.iter().flat_map(|g| g[range.clone()].to_vec()).fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        let mut nonzero = 0;
        for p in 0..probes.len() {
            for i in range.clone() {
                let keep = field[p][i];
                let numeric = central(
                    |v| {
                        field[p][i] = v;
                        cpu::weighted_probe_loss(&loss, &probes, &field)
                    },
                    keep,
                );
                field[p][i] = keep;
                check(&format!("probe {p} {part} {i}"), grads[p][i], numeric, scale);
                nonzero += usize::from(numeric != 0.0);
            }
        }
        // every made probe's density has a gradient; colour only at the seams
        let want = if part == "sigma" { 4 * 14 + 4 * 2 } else { 4 * 2 * 3 };
        assert_eq!(nonzero, want, "{part}: gradients other than 0");
    }
}

/// LPIPS's gradient to the render's colours (the heads through the normalisation, the five
/// convolutions' ReLUs and the two max pools, back through the scaling layer) against central
/// differences of the distance, at 48 of a 32 x 32 square's colours, with random weights and a
/// strip of pixels off the image.
#[test]
fn lpips_matches_finite_differences() {
    let plan = infnerf::lpips::Plan::new(32).unwrap();
    let weights: Vec<f64> = infnerf::lpips::LpipsWeights::random(21).values.iter().map(|&v| f64::from(v)).collect();
    let mut rng = SplitMix64(4);
    let pixels = 32 * 32;
    let mut colour = |p: usize| if p % 32 >= 29 { None } else { Some([0, 1, 2].map(|_| f64::from(rng.next_f32()))) };
    let mut render: Vec<Option<[f64; 3]>> = (0..pixels).map(&mut colour).collect();
    // the same pixels are off the image in both
    let target: Vec<Option<[f64; 3]>> = (0..pixels).map(&mut colour).collect();
    let (value, analytic) = cpu::lpips::distance(&weights, &plan, &render, &target);
    assert!(value > 0.0);
    let scale = analytic.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut checked = 0;
    for k in 0..48 {
        let p = (k * 389 + 17) % pixels;
        let Some(rgb) = render[p] else {
            assert!(analytic[p].iter().all(|&g| g == 0.0), "off the image, no gradient");
            continue;
        };
        let c = k % 3;
        let numeric = central(
            |v| {
                let mut moved = rgb;
                moved[c] = v;
                render[p] = Some(moved);
                cpu::lpips::distance(&weights, &plan, &render, &target).0
            },
            rgb[c],
        );
        render[p] = Some(rgb);
        check(&format!("pixel {p} channel {c}"), analytic[p][c], numeric, scale);
        checked += 1;
    }
    assert!(checked >= 40, "{checked} colours checked");
}

/// The adversarial term's two gradients against central differences, on a 16 x 16 square with random
/// discriminator parameters: the generator's loss (mean softplus(-logit) of a render) to the
/// render's colours through the three convolutions, and the discriminator's loss (softplus(-l) of a
/// target plus softplus(l) of the render) to every 37th parameter.
#[test]
fn adversarial_matches_finite_differences() {
    use cpu::discriminator as d;
    let size = 16u32;
    let pixels = (size * size) as usize;
    let mut params: Vec<f64> = infnerf::adversarial::init(5).iter().map(|&v| f64::from(v)).collect();
    let mut rng = SplitMix64(6);
    // random biases too, so that no stage starts at its defaults
    for p in params.iter_mut().filter(|p| **p == 0.0) {
        *p = f64::from(rng.next_f32()) * 0.2 - 0.1;
    }
    let mut square = || -> Vec<Option<[f64; 3]>> {
        (0..pixels)
            .map(|p| if p % 16 == 15 { None } else { Some([0, 1, 2].map(|_| f64::from(rng.next_f32()))) })
            .collect()
    };
    let mut render = square();
    let target = square();
    let generator = |params: &[f64], render: &[Option<[f64; 3]>]| {
        let logits = d::forward(params, size, &d::input(render)).pop().unwrap();
        logits.iter().map(|&l| d::softplus(-l)).sum::<f64>() / logits.len() as f64
    };
    let discriminator = |params: &[f64], render: &[Option<[f64; 3]>]| {
        let real = d::forward(params, size, &d::input(&target)).pop().unwrap();
        let fake = d::forward(params, size, &d::input(render)).pop().unwrap();
        let n = real.len() as f64;
        real.iter().map(|&l| d::softplus(-l)).sum::<f64>() / n + fake.iter().map(|&l| d::softplus(l)).sum::<f64>() / n
    };

    // the generator, to the colours (x = 2 rgb - 1)
    let t = d::forward(&params, size, &d::input(&render));
    let logits = t.last().unwrap();
    let g: Vec<f64> = logits.iter().map(|&l| -d::sigmoid(-l) / logits.len() as f64).collect();
    let (gx, _) = d::backward(&params, size, &t, &g);
    let analytic: Vec<[f64; 3]> = (0..pixels).map(|p| [0, 1, 2].map(|c| 2.0 * gx[c * pixels + p])).collect();
    let scale = analytic.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for p in (0..pixels).step_by(7) {
        let Some(rgb) = render[p] else { continue };
        for c in 0..3 {
            let numeric = central(
                |v| {
                    let mut moved = rgb;
                    moved[c] = v;
                    render[p] = Some(moved);
                    generator(&params, &render)
                },
                rgb[c],
            );
            render[p] = Some(rgb);
            check(&format!("colour {p}.{c}"), analytic[p][c], numeric, scale);
        }
    }

    // the discriminator, to its parameters
    let real = d::forward(&params, size, &d::input(&target));
    let fake = d::forward(&params, size, &d::input(&render));
    let n = real.last().unwrap().len() as f64;
    let g_real: Vec<f64> = real.last().unwrap().iter().map(|&l| -d::sigmoid(-l) / n).collect();
    let g_fake: Vec<f64> = fake.last().unwrap().iter().map(|&l| d::sigmoid(l) / n).collect();
    let (_, a) = d::backward(&params, size, &real, &g_real);
    let (_, b) = d::backward(&params, size, &fake, &g_fake);
    let analytic: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let scale = analytic.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for i in (0..params.len()).step_by(37) {
        let at = params[i];
        let numeric = central(
            |v| {
                params[i] = v;
                discriminator(&params, &render)
            },
            at,
        );
        params[i] = at;
        check(&format!("parameter {i}"), analytic[i], numeric, scale);
    }
}
