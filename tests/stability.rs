//! The guard in training (SPEC §4): injected faults are caught, skipped and, when they repeat, undone
//! from the last snapshot with a learning-rate cut; parameters never take a NaN.

mod common;

use common::random_dataset;
use infnerf::config::{Config, Precision, MAX_LOSS_SCALE};
use infnerf::stability::{Fault, LossScaler, StabilityEvent};
use infnerf::trainer::{LossStats, Trainer};

/// `steps` steps of the tiny settings with `fault`, the statistics read every 5 steps (a snapshot
/// may be taken at each), the detector over 5 steps.
fn train(fault: Option<&str>, steps: u32) -> (Trainer, Vec<LossStats>) {
    train_with(Config::tiny(), fault, steps)
}

fn train_with(mut config: Config, fault: Option<&str>, steps: u32) -> (Trainer, Vec<LossStats>) {
    config.stability.anomaly_window = 5;
    config.stability.snapshot_every = 5;
    let mut trainer = Trainer::new(common::gpu(), config, &random_dataset(4, 24, 8)).unwrap();
    trainer.fault = fault.map(|f| f.parse::<Fault>().unwrap());
    let mut reads = Vec::new();
    for _ in 0..steps / 5 {
        for _ in 0..5 {
            trainer.step().unwrap();
        }
        reads.push(trainer.read_stats().unwrap());
    }
    (trainer, reads)
}

fn total(reads: &[LossStats], count: impl Fn(&LossStats) -> u32) -> u32 {
    reads.iter().map(count).sum()
}

fn restores(reads: &[LossStats]) -> Vec<&StabilityEvent> {
    reads.iter().flat_map(|r| &r.events).filter(|e| matches!(e, StabilityEvent::Restore { .. })).collect()
}

fn assert_finite(trainer: &Trainer) {
    let params = trainer.read_params().unwrap();
    assert!(params.iter().all(|p| p.is_finite()), "a parameter is not finite");
}

#[test]
fn a_nan_gradient_is_skipped() {
    let (trainer, reads) = train(Some("nan-grad@12"), 30);
    assert_eq!(total(&reads, |r| r.guard.anomalies_nonfinite), 1);
    assert_eq!(total(&reads, |r| r.guard.skipped), 1, "only the poisoned step is skipped");
    assert!(restores(&reads).is_empty());
    // Adam dropped the gradient whole: nothing reached the sanitiser
    assert_eq!(reads.iter().map(|r| r.sanitized_total()).sum::<u64>(), 0);
    assert_finite(&trainer);
    assert_eq!(trainer.lr_state.restore_factor, 1.0);
}

#[test]
fn a_loss_spike_is_skipped() {
    let (trainer, reads) = train(Some("loss-spike@14"), 30);
    assert_eq!(total(&reads, |r| r.guard.anomalies_loss), 1);
    assert!(total(&reads, |r| r.guard.skipped) >= 1);
    assert!(restores(&reads).is_empty());
    assert_finite(&trainer);
}

#[test]
fn repeated_anomalies_restore_the_snapshot_and_cut_the_learning_rate() {
    let (trainer, reads) = train(Some("nan-grad@12x4"), 30);
    assert_eq!(total(&reads, |r| r.guard.anomalies_nonfinite), 4);
    let restores = restores(&reads);
    assert_eq!(restores.len(), 1, "{restores:?}");
    let StabilityEvent::Restore { step, from_step, anomalies_in_a_row, lr_restore_factor } = *restores[0] else {
        unreachable!()
    };
    assert_eq!((step, from_step, anomalies_in_a_row, lr_restore_factor), (15, 10, 3, 0.5));
    assert_eq!(trainer.lr_state.restore_factor, 0.5);
    assert_eq!(
        trainer.lr_factor(trainer.step),
        0.5 * trainer.config.train.lr_factor(trainer.step, &Default::default())
    );
    assert_finite(&trainer);
}

#[test]
fn without_the_detector_nan_gradients_are_zeroed_entry_by_entry() {
    let mut config = Config::tiny();
    config.stability.anomaly_sigma = 0.0;
    let mut trainer = Trainer::new(common::gpu(), config, &random_dataset(4, 24, 8)).unwrap();
    trainer.fault = Some("nan-grad@3".parse().unwrap());
    for _ in 0..6 {
        trainer.step().unwrap();
    }
    let stats = trainer.read_stats().unwrap();
    assert_eq!((stats.guard.anomalies(), stats.guard.skipped), (0, 0));
    assert!(stats.sanitized.iter().any(|&(pass, n)| pass == "adam" && n > 0), "{:?}", stats.sanitized);
    assert_finite(&trainer);
}

/// The loss scaler's state machine (mixed precision), pinned: an overflow halves the scale and skips
/// the step, `growth_steps` clean steps in a row double it, it stays within [1, 2^24], and at 1 an
/// overflow is left to the anomaly detector.
#[test]
fn the_loss_scaler_halves_on_overflow_and_doubles_after_clean_steps() {
    let mut scaler = LossScaler::new(8.0, 3);
    // (overflow, scale after, skipped)
    let steps = [
        (true, 4.0, true),
        (false, 4.0, false),
        (false, 4.0, false),
        (false, 8.0, false),
        (true, 4.0, true),
        (true, 2.0, true),
        (true, 1.0, true),
        (true, 1.0, false),
        (false, 1.0, false),
        (false, 2.0, false),
    ];
    for (i, (overflow, scale, skipped)) in steps.into_iter().enumerate() {
        assert_eq!(scaler.update(overflow), skipped, "step {i}");
        assert_eq!(scaler.scale, scale, "step {i}");
    }
    let mut top = LossScaler::new(MAX_LOSS_SCALE, 1);
    top.update(false);
    assert_eq!(top.scale, MAX_LOSS_SCALE);
}

/// Mixed precision trains (the loss falls, no parameter becomes NaN) and a NaN gradient counts as an
/// overflow of the scaled f16 gradients: the step is skipped and the loss scale halved, with no
/// anomaly and no restore; the scale doubles back after `loss_scale_growth_steps` clean steps.
#[test]
fn mixed_precision_trains_and_an_overflow_halves_the_loss_scale() {
    let mut config = Config::tiny();
    config.train.precision = Precision::Mixed;
    config.train.loss_scale_growth_steps = 10;
    let init = config.train.loss_scale_init;
    let (trainer, reads) = train_with(config, Some("nan-grad@12"), 30);
    assert_eq!(trainer.precision(), Precision::Mixed);
    assert_eq!(total(&reads, |r| r.guard.overflows), 1);
    assert_eq!(total(&reads, |r| r.guard.skipped), 1);
    assert_eq!(total(&reads, |r| r.guard.anomalies()), 0);
    assert!(restores(&reads).is_empty());
    // doubled at steps 10 and 20, halved at 12 (its count restarts), doubled at 22
    let scales: Vec<f64> = reads.iter().map(|r| r.guard.loss_scale).collect();
    let s = f64::from(init);
    assert_eq!(scales, [s, 2.0 * s, s, s, 2.0 * s, 2.0 * s], "read every 5 steps");
    assert!(reads[5].mse < reads[0].mse, "the loss should fall: {} -> {}", reads[0].mse, reads[5].mse);
    assert_finite(&trainer);
    // Adam kept the f16 copy of the tables up to date
    common::assert_tables_copy_params(&trainer);
}

/// Without SHADER_F16 a mixed-precision setting trains in f32 (a warning says so): no f16 copy, no
/// loss scale.
#[test]
fn without_f16_mixed_precision_falls_back_to_f32() {
    let mut config = Config::tiny();
    config.train.precision = Precision::Mixed;
    let mut trainer = Trainer::new(common::gpu_without_f16(), config, &random_dataset(4, 24, 8)).unwrap();
    assert_eq!(trainer.precision(), Precision::F32);
    assert!(!trainer.shape.half && !trainer.model.half);
    for _ in 0..5 {
        trainer.step().unwrap();
    }
    let stats = trainer.read_stats().unwrap();
    assert_eq!(stats.guard.loss_scale, 1.0);
    assert!(stats.mse.is_finite());
    assert_finite(&trainer);
}
