//! Gradient accumulation and the memory budget (SPEC §4, §5): both change how much of a step is on
//! the device at once, never what the optimiser sees.

mod common;

use common::random_dataset;
use infnerf::config::Config;
use infnerf::trainer::Trainer;

/// `reads` x 4 steps; the mean loss at each statistics read, and the trainer.
fn train(config: Config, reads: u32) -> (Trainer, Vec<f64>) {
    let mut trainer = Trainer::new(common::gpu(), config, &random_dataset(4, 32, 3)).unwrap();
    let mut losses = Vec::new();
    for _ in 0..reads {
        for _ in 0..4 {
            trainer.step().unwrap();
        }
        losses.push(trainer.read_stats().unwrap().total);
    }
    (trainer, losses)
}

fn assert_same_losses(a: &[f64], b: &[f64], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-6), "{what}: read {i}: {x} against {y} ({a:?} / {b:?})");
    }
}

/// The tiny settings with enough samples that the per-sample buffers outweigh the model.
fn config(patches: u32) -> Config {
    let mut config = Config::tiny();
    config.train.patches_per_batch = patches;
    config.train.samples_per_ray = 128;
    config
}

#[test]
fn accumulating_micro_batches_is_one_large_batch() {
    let (whole, expected) = train(config(8), 4);
    let mut accumulated = config(2);
    accumulated.train.accumulate_steps = 4;
    let (micro, losses) = train(accumulated, 4);
    assert_eq!(whole.chunk_patches, 8);
    assert_eq!(micro.chunk_patches, 2, "one micro-batch at a time");
    assert_eq!(micro.rays_per_step(), whole.rays_per_step());
    assert!(micro.gpu.peak_bytes() < whole.gpu.peak_bytes(), "the micro-batches take less memory");
    assert!(expected.last() < expected.first(), "the run trains: {expected:?}");
    // the same patches, so the same losses (a loss normalised per micro-batch would be 4x)
    assert_same_losses(&expected, &losses, "4 x 2 patches against 8");
}

#[test]
fn a_memory_budget_is_kept_and_changes_only_the_chunk() {
    let (free, expected) = train(config(16), 3);
    let workspaces = free.train.bytes + free.view.bytes;
    let model = free.gpu.peak_bytes() - workspaces;
    // room for about a third of the workspaces under 90% of the budget
    let budget_mb = ((model + workspaces / 3) as f64 / 0.9 / f64::from(1 << 20)).ceil() as u32;
    let mut limited = config(16);
    limited.train.memory_budget_mb = budget_mb;
    let (trainer, losses) = train(limited, 3);
    let budget = u64::from(budget_mb) << 20;
    assert!(trainer.chunk_patches < 16, "the chunk shrank: {} patches", trainer.chunk_patches);
    assert!(trainer.chunk_patches >= 4, "but only as far as needed: {} patches", trainer.chunk_patches);
    assert!(trainer.gpu.peak_bytes() <= budget, "peak {} > budget {budget}", trainer.gpu.peak_bytes());
    assert_same_losses(&expected, &losses, "under a budget");
}

#[test]
fn under_a_roomy_budget_the_chunk_grows_to_the_whole_step() {
    let mut roomy = config(2);
    roomy.train.accumulate_steps = 4;
    roomy.train.memory_budget_mb = 4096;
    let (trainer, _) = train(roomy, 12);
    assert_eq!(trainer.chunk_patches, 8, "x1.2 at each read below 70% of the budget, up to the step");
    assert_eq!(trainer.chunks(), 1);
}

/// The probe groups of the node terms are spread over a step's chunks (each chunk draws its share,
/// at most one per ray of its smallest chunk), and their terms stay means over the step's groups.
#[test]
fn probes_are_spread_over_the_chunks_of_a_step() {
    let mut config = config(2);
    config.loss.probes = 100;
    // 2 patches of 2x2 a chunk: 8 rays, so 4 chunks of 25 groups would not fit; 8 each
    config.train.accumulate_steps = 4;
    config.train.patch_size = 2;
    assert_eq!(infnerf::trainer::probe_groups(&config, 2), 8);
    config.train.patch_size = 8;
    assert_eq!(infnerf::trainer::probe_groups(&config, 2), 25);
    // 8 patches in chunks of 3, 3 and 2: the last chunk's 128 rays bound it
    config.train.accumulate_steps = 1;
    config.train.patches_per_batch = 8;
    config.loss.probes = 1000;
    assert_eq!(infnerf::trainer::probe_groups(&config, 3), 128);

    let mut config = self::config(2);
    config.train.patch_size = 8;
    config.train.accumulate_steps = 4;
    config.loss.probes = 100;
    common::probe_terms_on(&mut config, [0.01, 0.1, 0.1]);
    let mut trainer = Trainer::new(common::gpu(), config, &random_dataset(4, 32, 3)).unwrap();
    assert_eq!(trainer.chunks(), 4);
    for _ in 0..4 {
        trainer.step().unwrap();
    }
    let stats = trainer.read_stats().unwrap();
    let term = |name: &str| stats.terms.iter().find(|(n, _)| *n == name).unwrap().1[0];
    // a mean of 1 - cosine lies in [0, 2] (not 4x that, as a sum over the chunks' means would)
    let normal = term("normal_consistency");
    assert!(normal > 0.0 && normal <= 2.0, "normal consistency {normal}");
    for name in ["density_consistency", "seam"] {
        let value = term(name);
        assert!(value.is_finite() && (0.0..=2.0).contains(&value), "{name} {value}");
    }
    assert!(stats.total.is_finite());
}
