//! Central finite differences of the CPU references against their analytic backward passes
//! (which the kernels are compared with in tests/kernels.rs). Relative error <= 1e-3.

mod common;

use common::reference as cpu;
use common::{gpu, random_dataset, tiny_config};
use infnerf::field::SplitMix64;
use infnerf::gpu::records::{Ray, Sample};
use infnerf::octree::Octree;
use infnerf::trainer::{dispatch, Trainer};

const H: f64 = 1e-6;

fn check(name: &str, analytic: f64, numeric: f64, scale: f64) {
    let err = (analytic - numeric).abs() / (analytic.abs().max(numeric.abs()).max(1e-3 * scale));
    assert!(err <= 1e-3, "{name}: analytic {analytic:e} numeric {numeric:e} relative error {err:e}");
}

/// Rays and samples from the real passes, so the checks run on realistic inputs.
fn scene() -> (Trainer, Vec<Ray>, Vec<Sample>) {
    let dataset = random_dataset(3, 16, 21);
    let mut config = tiny_config();
    config.field.max_depth = 1;
    config.field.finest_resolution = 16;
    config.train.patches_per_batch = 2;
    config.train.patch_size = 4;
    config.train.samples_per_ray = 16;
    let mut trainer = Trainer::new(gpu(), config, &dataset).unwrap();
    let (frame, _) = trainer.prepare_step(3);
    let n = frame.n_rays * frame.samples_per_ray;
    let mut encoder = trainer.gpu.device.create_command_encoder(&Default::default());
    dispatch(&mut encoder, "rays", &trainer.pipelines.rays, &trainer.bind_groups.rays, frame.n_rays, 64);
    trainer.encode_samples(&mut encoder, n);
    trainer.gpu.queue.submit([encoder.finish()]);
    let rays = trainer.gpu.read(&trainer.buffers.rays, frame.n_rays as usize).unwrap();
    let samples = trainer.gpu.read(&trainer.buffers.samples, n as usize).unwrap();
    (trainer, rays, samples)
}

fn random_params(trainer: &Trainer, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64(seed);
    let l = &trainer.layout;
    (0..trainer.n_params)
        .map(|i| f64::from(rng.next_f32() * 2.0 - 1.0) * if i % l.node_params < l.hash_params { 1.0 } else { 0.5 })
        .collect()
}

#[test]
fn render_backward_matches_finite_differences() {
    let (trainer, rays, samples) = scene();
    let n = trainer.config.train.samples_per_ray as usize;
    let bg: Vec<[f64; 3]> = (0..rays.len()).map(|r| [0.1 * (r % 7) as f64, 0.5, 1.0]).collect();
    let mut rng = SplitMix64(3);
    // a field with real occlusion: densities up to ~40 over deltas of ~0.1
    let mut field: Vec<[f64; 4]> = samples
        .iter()
        .map(|_| [0, 1, 2, 3].map(|k| f64::from(rng.next_f32()) * if k == 3 { 40.0 } else { 1.0 }))
        .collect();
    let inv_count = 1.0 / (3.0 * rays.len() as f64);
    let loss = |f: &[[f64; 4]]| cpu::mse_loss(&cpu::render_forward(&samples, f, n, &bg), &rays, inv_count);
    let grads = cpu::render_backward(&samples, &field, &rays, n, &bg, inv_count);
    let scale = grads.iter().flatten().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 0.0);
    let mut checked = 0;
    for s in (0..samples.len()).step_by(7) {
        if samples[s].node == cpu::NO_NODE {
            continue;
        }
        for k in 0..4 {
            let keep = field[s][k];
            field[s][k] = keep + H;
            let up = loss(&field);
            field[s][k] = keep - H;
            let down = loss(&field);
            field[s][k] = keep;
            check(&format!("sample {s} channel {k}"), grads[s][k], (up - down) / (2.0 * H), scale);
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} entries checked");
}

/// The whole chain: params -> field -> render -> MSE, against field_backward(render_backward).
#[test]
fn field_backward_matches_finite_differences() {
    let (trainer, rays, samples) = scene();
    let layout = trainer.layout.clone();
    let octree: &Octree = &trainer.octree;
    let n = trainer.config.train.samples_per_ray as usize;
    let bg: Vec<[f64; 3]> = (0..rays.len()).map(|r| [0.1 * (r % 7) as f64, 0.5, 1.0]).collect();
    let max_density = f64::from(trainer.config.field.max_density);
    let inv_count = 1.0 / (3.0 * rays.len() as f64);
    let mut params = random_params(&trainer, 17);
    let loss = |p: &[f64]| {
        let field = cpu::field_forward(&layout, p, octree, &samples, &rays, max_density);
        cpu::mse_loss(&cpu::render_forward(&samples, &field, n, &bg), &rays, inv_count)
    };
    let field = cpu::field_forward(&layout, &params, octree, &samples, &rays, max_density);
    let sample_grads = cpu::render_backward(&samples, &field, &rays, n, &bg, inv_count);
    let grads = cpu::field_backward(&layout, &params, octree, &samples, &rays, &sample_grads, max_density);
    let scale = grads.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 0.0);

    // every decoder tensor of every node that samples reach, and the hash entries with the largest gradients
    let mut chosen: Vec<usize> = Vec::new();
    let used: std::collections::BTreeSet<u32> = samples.iter().map(|s| s.node).filter(|&n| n != cpu::NO_NODE).collect();
    assert!(used.len() >= 2, "samples should reach several nodes: {used:?}");
    for &node in &used {
        let base = (node * layout.node_params) as usize;
        for (start, end) in [
            (layout.off_w1, layout.off_b1),
            (layout.off_b1, layout.off_w2),
            (layout.off_w2, layout.off_b2),
            (layout.off_b2, layout.off_w3),
            (layout.off_w3, layout.off_b3),
            (layout.off_b3, layout.off_w4),
            (layout.off_w4, layout.off_b4),
            (layout.off_b4, layout.node_params),
        ] {
            let len = (end - start) as usize;
            for k in [0, len / 2, len - 1] {
                chosen.push(base + start as usize + k);
            }
        }
    }
    let mut hash: Vec<usize> =
        (0..grads.len()).filter(|&i| (i as u32) % layout.node_params < layout.hash_params && grads[i] != 0.0).collect();
    assert!(hash.len() > 50, "hash entries with gradient: {}", hash.len());
    hash.sort_by(|&a, &b| grads[b].abs().total_cmp(&grads[a].abs()));
    chosen.extend(hash.iter().take(12));
    chosen.extend(hash.iter().rev().take(4));

    for &i in &chosen {
        let keep = params[i];
        params[i] = keep + H;
        let up = loss(&params);
        params[i] = keep - H;
        let down = loss(&params);
        params[i] = keep;
        check(&format!("parameter {i}"), grads[i], (up - down) / (2.0 * H), scale);
    }
}
