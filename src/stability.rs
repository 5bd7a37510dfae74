//! What the guard (shaders/grad_guard.wgsl) reports and what the host does about it (SPEC §4): the
//! gradient's statistics, anomalies and skipped steps as read with the loss statistics, the
//! in-memory snapshot that repeated anomalies restore, and the faults `--inject-fault` injects so
//! that the recovery can be shown and tested.

use crate::gpu::records::{guard, GRAD_TENSORS};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// A tensor's gradient at the last step: norm, mean, standard deviation and largest magnitude over
/// its entries with a gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TensorGrad {
    pub norm: f64,
    pub mean: f64,
    pub std: f64,
    pub max: f64,
}

/// The guard's report since the last statistics read.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GuardReport {
    /// The last step's global gradient norm (before clipping), and the mean of the finite norms.
    pub grad_norm: f64,
    pub grad_norm_mean: f64,
    /// Per tensor (`GRAD_TENSORS`), the last step's statistics.
    pub tensors: BTreeMap<String, TensorGrad>,
    /// Anomalies by kind: loss spike, gradient-norm spike, non-finite loss or gradient.
    pub anomalies_loss: u32,
    pub anomalies_grad: u32,
    pub anomalies_nonfinite: u32,
    /// Steps whose update was skipped, and steps whose gradient was clipped.
    pub skipped: u32,
    pub clipped: u32,
    /// The longest run of anomalies in a row.
    pub max_run: u32,
    /// Mixed precision: the loss scale now, and the overflows (skipped steps that halved it).
    pub loss_scale: f64,
    pub overflows: u32,
}

impl GuardReport {
    /// From the guard's words (`records::guard`).
    pub fn from_words(words: &[f32]) -> Self {
        let w = |i: u32| f64::from(words[i as usize]);
        let count = |i: u32| words[i as usize].max(0.0) as u32;
        let steps = w(guard::STEPS);
        let tensors = GRAD_TENSORS
            .iter()
            .enumerate()
            .map(|(t, name)| {
                let at = guard::TENSORS + 4 * t as u32;
                let stats = TensorGrad { norm: w(at), mean: w(at + 1), std: w(at + 2), max: w(at + 3) };
                (name.to_string(), stats)
            })
            .collect();
        Self {
            grad_norm: w(guard::NORM),
            grad_norm_mean: if steps > 0.0 { w(guard::NORM_SUM) / steps } else { 0.0 },
            tensors,
            anomalies_loss: count(guard::ANOMALY_LOSS),
            anomalies_grad: count(guard::ANOMALY_GRAD),
            anomalies_nonfinite: count(guard::ANOMALY_NONFINITE),
            skipped: count(guard::SKIPPED),
            clipped: count(guard::CLIPPED),
            max_run: count(guard::MAX_RUN),
            loss_scale: w(guard::LOSS_SCALE),
            overflows: count(guard::OVERFLOWS),
        }
    }

    pub fn anomalies(&self) -> u32 {
        self.anomalies_loss + self.anomalies_grad + self.anomalies_nonfinite
    }
}

/// The words of the guard's state the host clears when it reads them ("since the read").
pub const SINCE_READ: std::ops::RangeInclusive<u32> = guard::NORM_SUM..=guard::OVERFLOWS;

/// The words that restart the detector's history (FILLED, NEXT, RUN).
pub const HISTORY_STATE: std::ops::RangeInclusive<u32> = guard::FILLED..=guard::RUN;

/// Dynamic loss scaling (mixed precision, SPEC §4): the reference of what grad_guard.wgsl does
/// on the device at every step. The per-sample gradients are stored in f16 times `scale`, so that
/// small gradients keep their precision; a step whose scaled gradients overflowed (a non-finite
/// gradient) is skipped and halves the scale; `growth_steps` steps in a row without an overflow
/// double it (at most `config::MAX_LOSS_SCALE`). At scale 1 an overflow is no longer the scale's
/// doing: the anomaly detector treats it as a non-finite gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaler {
    pub scale: f32,
    /// Steps in a row without an overflow since the scale last changed.
    pub clean_steps: u32,
    pub growth_steps: u32,
}

impl LossScaler {
    pub fn new(scale: f32, growth_steps: u32) -> Self {
        Self { scale, clean_steps: 0, growth_steps }
    }

    /// The scale's update after a step; true when the step is skipped as an overflow.
    pub fn update(&mut self, overflow: bool) -> bool {
        if overflow && self.scale > 1.0 {
            self.scale = (self.scale * 0.5).max(1.0);
            self.clean_steps = 0;
            return true;
        }
        self.clean_steps += 1;
        if self.clean_steps >= self.growth_steps {
            self.scale = (self.scale * 2.0).min(crate::config::MAX_LOSS_SCALE);
            self.clean_steps = 0;
        }
        false
    }
}

/// What the host did about the training's stability at a statistics read (a routine snapshot is no
/// event: `Trainer::snapshot` says which step it holds).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StabilityEvent {
    /// Repeated anomalies: the snapshot of `from_step` came back and the learning rate was cut.
    Restore { step: u32, from_step: u32, anomalies_in_a_row: u32, lr_restore_factor: f32 },
    /// The plateau rule cut the learning rate (its factor now `lr_plateau_factor^reductions`).
    Plateau { step: u32, reductions: u32 },
}

/// The last good state in host memory.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub step: u32,
    pub params: Vec<f32>,
    pub m1: Vec<f32>,
    pub m2: Vec<f32>,
}

/// A fault injected into training (`--inject-fault KIND@STEP[xCOUNT]`), to show and test recovery.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub step: u32,
    /// Consecutive steps it lasts.
    pub count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The gradient of every node's first decoder weight becomes NaN (written into the gradient
    /// buffer before the step's backward adds to it).
    NanGrad,
    /// The MSE and its gradient are multiplied by 1000 (a bad batch).
    LossSpike,
}

/// The multiplier of a loss spike.
pub const SPIKE_FACTOR: f32 = 1000.0;

impl Fault {
    pub fn active(&self, step: u32) -> bool {
        step >= self.step && step - self.step < self.count
    }

    /// The multiplier of the MSE and its gradient at `step` (a loss spike).
    pub fn loss_factor(&self, step: u32) -> f32 {
        if self.kind == FaultKind::LossSpike && self.active(step) {
            SPIKE_FACTOR
        } else {
            1.0
        }
    }

    /// Whether the gradients are poisoned with NaN at `step`.
    pub fn nan_grad(&self, step: u32) -> bool {
        self.kind == FaultKind::NanGrad && self.active(step)
    }
}

impl FromStr for Fault {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let usage = "expected KIND@STEP or KIND@STEPxCOUNT with KIND nan-grad or loss-spike, e.g. nan-grad@300";
        let Some((kind, at)) = text.split_once('@') else { bail!("--inject-fault {text:?}: {usage}") };
        let kind = match kind {
            "nan-grad" => FaultKind::NanGrad,
            "loss-spike" => FaultKind::LossSpike,
            other => bail!("--inject-fault: unknown kind {other:?}; {usage}"),
        };
        let (step, count) = at.split_once('x').unwrap_or((at, "1"));
        let (Ok(step), Ok(count)) = (step.parse::<u32>(), count.parse::<u32>()) else {
            bail!("--inject-fault {text:?}: {usage}")
        };
        if count == 0 {
            bail!("--inject-fault {text:?}: the count must be at least 1");
        }
        Ok(Self { kind, step, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_apply_at_their_steps() {
        let f: Fault = "nan-grad@300".parse().unwrap();
        assert_eq!(f, Fault { kind: FaultKind::NanGrad, step: 300, count: 1 });
        assert!(f.nan_grad(300) && !f.nan_grad(299) && !f.nan_grad(301));
        assert_eq!(f.loss_factor(300), 1.0);
        let f: Fault = "loss-spike@10x3".parse().unwrap();
        let factors = (f.loss_factor(9), f.loss_factor(10), f.loss_factor(12), f.loss_factor(13));
        assert_eq!(factors, (1.0, SPIKE_FACTOR, SPIKE_FACTOR, 1.0));
        assert!(!f.nan_grad(10));
        for bad in ["nan-grad", "nan@3", "loss-spike@x", "loss-spike@3x0", "nan-grad@-1"] {
            let error = bad.parse::<Fault>().unwrap_err().to_string();
            assert!(error.contains("--inject-fault"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_report_reads_the_guard_words() {
        let mut words = vec![0.0f32; guard::WORDS as usize];
        words[guard::NORM as usize] = 2.0;
        words[guard::NORM_SUM as usize] = 9.0;
        words[guard::STEPS as usize] = 3.0;
        words[guard::ANOMALY_GRAD as usize] = 1.0;
        words[guard::ANOMALY_NONFINITE as usize] = 2.0;
        words[guard::SKIPPED as usize] = 3.0;
        words[(guard::TENSORS + 4 + 3) as usize] = 0.5;
        let r = GuardReport::from_words(&words);
        assert_eq!((r.grad_norm, r.grad_norm_mean, r.anomalies(), r.skipped), (2.0, 3.0, 3, 3));
        assert_eq!(r.tensors["density"].max, 0.5);
        assert!(SINCE_READ.contains(&guard::SKIPPED) && !SINCE_READ.contains(&guard::FILLED));
    }
}
