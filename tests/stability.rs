//! The guard in training (SPEC §4): injected faults are caught, skipped and, when they repeat, undone
//! from the last snapshot with a learning-rate cut; parameters never take a NaN.

mod common;

use common::random_dataset;
use infnerf::config::Config;
use infnerf::stability::{Fault, StabilityEvent};
use infnerf::trainer::{LossStats, Trainer};

/// `steps` steps of the tiny settings with `fault`, the statistics read every 5 steps (a snapshot
/// may be taken at each), the detector over 5 steps.
fn train(fault: Option<&str>, steps: u32) -> (Trainer, Vec<LossStats>) {
    let mut config = Config::tiny();
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
