//! How much each loss term counts at a step: the seed's weight schedule (§4.1, SPEC §3.6) times its
//! dynamic balancer (§4.2, SPEC §3.7) times the term's lambda, each factor overridable.
//!
//! Everything here is a pure function of the step, the settings (`config::ScheduleConfig`) and the
//! balancer's recorded history, so the viewer can plot the whole future schedule and tests can pin
//! it. The trainer multiplies: `effective_weight(lambda, group multiplier, balancer weight)`.

use crate::config::ScheduleConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;

/// The seed's four scheduled groups of loss terms (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Photometric reconstruction: constant weight.
    Rgb,
    /// Rendered geometry compared between adjacent cuts: ramps in over the warm-up.
    Geometric,
    /// Priors on the field: off until a start step, then ramps in.
    Regularization,
    /// Agreement of a parent node's field with its children's: peaks mid-training, then relaxes.
    Consistency,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Rgb, Group::Geometric, Group::Regularization, Group::Consistency];

    /// The group's name in settings, metrics and the viewer.
    pub fn name(self) -> &'static str {
        match self {
            Group::Rgb => "rgb",
            Group::Geometric => "geometric",
            Group::Regularization => "regularization",
            Group::Consistency => "consistency",
        }
    }
}

/// Which group schedules each loss term, by the term's name (its `LOSS_NAMES` entry, the seed's
/// `lambda_<name>` without the prefix).
///
/// The seed schedules four groups (§4.1) but defines three families of terms (§1.1 reconstruction,
/// §1.2 "geometry consistency", §1.3 regularization) plus the optional adversarial term (§1.4), and
/// never says which term is in which group. Our reading:
/// - §1.1 mse, ssim, lpips -> `rgb`, which the seed holds constant.
/// - §1.2 is the seed's only geometric family, and its title names both scheduled groups, so it
///   splits by what is compared. Depth (Huber) and normal (1 - cosine) agreement between adjacent
///   cuts compare *rendered geometry*, which is noise until the field has found its surfaces (and
///   normals, the density gradient, are noisier still): they are `geometric`, ramped in over the
///   warm-up ("small early, larger later", the seed's comment). Density agreement is Inf-NeRF's
///   inter-level loss, a parent node's transmittance against its children's: it is what ties the
///   levels of the tree together, most useful while the fine levels form and a brake on their
///   detail later, which is the seed's consistency curve ("largest mid-training, smaller later").
/// - §1.3 sparsity, tv, seam continuity (SPEC's replacement of the seed's parameter smoothness),
///   param (L2) -> `regularization`, which the seed starts late.
/// - §1.4 adversarial (the generator's loss on the field) -> `rgb`: like LPIPS it judges the
///   appearance of rendered patches against real ones, and the seed gives it no schedule of its
///   own; inventing a fifth curve would be behaviour the seed does not have, and its lambda (0 by
///   default) and the rgb override already let a user hold it back. The discriminator's own loss
///   trains the discriminator, not the field: it is listed (with `rgb`, as the term it opposes) so
///   that it is logged like the others, but its lambda is 0.
///
/// Moving a term to another group is one line of this table.
pub const TERM_GROUPS: [(&str, Group); 13] = [
    ("mse", Group::Rgb),
    ("ssim", Group::Rgb),
    ("lpips", Group::Rgb),
    ("adversarial", Group::Rgb),
    ("discriminator", Group::Rgb),
    ("depth_consistency", Group::Geometric),
    ("normal_consistency", Group::Geometric),
    ("density_consistency", Group::Consistency),
    ("sparsity", Group::Regularization),
    ("tv", Group::Regularization),
    ("tv_depth", Group::Regularization),
    ("seam", Group::Regularization),
    ("param", Group::Regularization),
];

/// The group that schedules loss term `term` (see `TERM_GROUPS` for the reading of the seed).
/// Panics on a name the table lacks, as `Config::lambda` does: the terms are a fixed list and a
/// miss is a bug (a test checks every `LOSS_NAMES` entry).
pub fn term_group(term: &str) -> Group {
    find_term_group(term).unwrap_or_else(|| panic!("no loss term named {term}"))
}

/// `term_group` for names from outside (settings), which may be wrong.
pub fn find_term_group(term: &str) -> Option<Group> {
    TERM_GROUPS.iter().find(|(name, _)| *name == term).map(|&(_, group)| group)
}

/// One multiplier per group, each in [0, 1]; the per-term lambdas are applied elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupWeights {
    pub rgb: f64,
    pub geometric: f64,
    pub regularization: f64,
    pub consistency: f64,
}

impl GroupWeights {
    pub fn get(&self, group: Group) -> f64 {
        match group {
            Group::Rgb => self.rgb,
            Group::Geometric => self.geometric,
            Group::Regularization => self.regularization,
            Group::Consistency => self.consistency,
        }
    }

    pub fn get_mut(&mut self, group: Group) -> &mut f64 {
        match group {
            Group::Rgb => &mut self.rgb,
            Group::Geometric => &mut self.geometric,
            Group::Regularization => &mut self.regularization,
            Group::Consistency => &mut self.consistency,
        }
    }
}

/// The consistency multiplier never decays below this (the seed's `max(0.1, ...)`).
pub const CONSISTENCY_FLOOR: f64 = 0.1;

/// The group multipliers at `step`, with the settings' overrides applied (an override replaces the
/// computed multiplier; `ScheduleConfig::without_overrides` gives the bare schedule).
///
/// - rgb: 1.
/// - geometric: step / geometric_warmup_steps, capped at 1 (warm-up 0: 1 from the start).
/// - regularization: 0 before regularization_start_steps, then ramps to 1 over as many steps again
///   (the seed's `min(1, (step - start) / start)`; start 0: 1 from the start).
/// - consistency: step / consistency_peak_steps up to the peak, then 1 - (step - peak) / peak,
///   floored at `CONSISTENCY_FLOOR`.
///
/// A function of the step alone, never of earlier calls: nothing compounds (as the seed's learning
/// rate decay does, which SPEC §4 corrects).
pub fn schedule_weights(step: u32, s: &ScheduleConfig) -> GroupWeights {
    let t = f64::from(step);
    let warmup = f64::from(s.geometric_warmup_steps);
    let start = f64::from(s.regularization_start_steps);
    let peak = f64::from(s.consistency_peak_steps);
    let mut weights = GroupWeights {
        rgb: 1.0,
        geometric: ramp(t, 0.0, warmup),
        regularization: ramp(t, start, start),
        consistency: if peak <= 0.0 {
            // not a valid setting; past the peak from step 0
            CONSISTENCY_FLOOR
        } else if t < peak {
            t / peak
        } else {
            (1.0 - (t - peak) / peak).max(CONSISTENCY_FLOOR)
        },
    };
    for group in Group::ALL {
        if let Some(value) = s.group_override(group) {
            *weights.get_mut(group) = f64::from(value);
        }
    }
    weights
}

/// 0 before `start`, then linear to 1 over `length` steps (a zero length jumps to 1 at `start`).
fn ramp(t: f64, start: f64, length: f64) -> f64 {
    if t < start {
        0.0
    } else if length <= 0.0 {
        1.0
    } else {
        ((t - start) / length).min(1.0)
    }
}

/// The steps where the schedule's slopes change: a plot through them (and the ends) is exact.
pub fn schedule_breakpoints(s: &ScheduleConfig) -> Vec<u32> {
    let start = s.regularization_start_steps;
    let peak = s.consistency_peak_steps;
    // the consistency floor is reached at 1.9 * peak, between two whole steps in general
    let floor_at = f64::from(peak) * (2.0 - CONSISTENCY_FLOOR);
    let mut steps = vec![
        s.geometric_warmup_steps,
        start,
        start.saturating_mul(2),
        peak,
        floor_at.floor() as u32,
        floor_at.ceil() as u32, // `as` saturates at u32::MAX
    ];
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// The schedule over `steps` for plotting: `points` evenly spaced steps from the first to the last
/// of the range (every step once if the range is shorter), plus the breakpoints inside it, in order,
/// each with `schedule_weights` at that step.
pub fn schedule_curve(steps: Range<u32>, points: usize, s: &ScheduleConfig) -> Vec<(u32, GroupWeights)> {
    if steps.is_empty() || points == 0 {
        return Vec::new();
    }
    let first = steps.start;
    let last = steps.end - 1;
    let span = f64::from(last - first);
    let mut at: Vec<u32> = if points == 1 {
        vec![first]
    } else {
        (0..points).map(|i| first + (span * i as f64 / (points - 1) as f64).round() as u32).collect()
    };
    at.extend(schedule_breakpoints(s).into_iter().filter(|b| steps.contains(b)));
    at.sort_unstable();
    at.dedup();
    at.into_iter().map(|step| (step, schedule_weights(step, s))).collect()
}

/// The seed's balancer weight of a term whose recorded values are `history`, oldest first:
/// 1 / (1 + CV) over the last `window` values, CV = std / mean with the population std (numpy's
/// default). 1 while fewer than `window` values exist, and 1 where the CV means nothing: a constant
/// window (std 0, as the seed), a mean <= 0 (a CV below 0 would raise the weight above 1), a
/// non-finite value, a window of 0. So the weight is always in (0, 1].
pub fn balancer_weight(history: &[f64], window: usize) -> f64 {
    if window == 0 || history.len() < window {
        return 1.0;
    }
    let recent = &history[history.len() - window..];
    if !recent.iter().all(|v| v.is_finite()) || recent.iter().all(|&v| v == recent[0]) {
        return 1.0;
    }
    let n = window as f64;
    let mean = recent.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return 1.0;
    }
    let std = (recent.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let weight = 1.0 / (1.0 + std / mean);
    if weight.is_finite() {
        weight
    } else {
        1.0
    }
}

/// The dynamic balancer's state: the last `window` values of each loss term, oldest first (raw,
/// before any weight: the CV does not depend on the scale). Serialisable, so a checkpoint stores
/// it and a resumed training balances as the uninterrupted one would.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Balancer {
    window: usize,
    history: BTreeMap<String, Vec<f64>>,
}

impl Default for Balancer {
    fn default() -> Self {
        Self::new(10)
    }
}

impl Balancer {
    /// An empty balancer over the last `window` values (`schedule.balancer_window`).
    pub fn new(window: usize) -> Self {
        Self { window, history: BTreeMap::new() }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// A new window length (a live change of `schedule.balancer_window`): a shorter one keeps the
    /// newest values; a longer one waits for the extra values, the weight staying 1 meanwhile.
    pub fn set_window(&mut self, window: usize) {
        self.window = window;
        for values in self.history.values_mut() {
            values.drain(..values.len().saturating_sub(window));
        }
    }

    /// Records one value of `term`; returns whether it was kept. A non-finite value is not: a NaN
    /// or overflow step (the anomaly detector's business) would otherwise hold every weight of
    /// that term at 1 for the next `window` records.
    pub fn record(&mut self, term: &str, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        let values = self.history.entry(term.to_string()).or_default();
        values.push(value);
        values.drain(..values.len().saturating_sub(self.window));
        true
    }

    /// The balancer's weight of `term` now (`balancer_weight` of its recorded values; 1 for a term
    /// never recorded). Overrides are applied by `balancer_multiplier`.
    pub fn weight(&self, term: &str) -> f64 {
        self.history.get(term).map_or(1.0, |values| balancer_weight(values, self.window))
    }

    /// The recorded values of `term`, oldest first.
    pub fn history(&self, term: &str) -> &[f64] {
        self.history.get(term).map_or(&[], Vec::as_slice)
    }

    /// Every recorded term's weight, by name (for the metrics line and the viewer).
    pub fn weights(&self) -> BTreeMap<String, f64> {
        self.history.keys().map(|term| (term.clone(), self.weight(term))).collect()
    }
}

/// A term's weight in the total loss: its lambda times its group's schedule multiplier times its
/// balancer weight.
pub fn effective_weight(lambda: f64, group_multiplier: f64, balancer_weight: f64) -> f64 {
    lambda * group_multiplier * balancer_weight
}

/// The balancer factor of `term` under the settings: its override if set (whether balancing is on
/// or not: an override always replaces), else the balancer's weight when `schedule.balancer` is on,
/// else 1.
pub fn balancer_multiplier(term: &str, balancer: &Balancer, s: &ScheduleConfig) -> f64 {
    match s.balancer_override.get(term) {
        Some(&value) => f64::from(value),
        None if s.balancer => balancer.weight(term),
        None => 1.0,
    }
}

/// Everything at once: `lambda` x the schedule multiplier of `term`'s group at `step` x its balancer
/// factor, overrides applied.
pub fn term_weight(term: &str, lambda: f64, step: u32, s: &ScheduleConfig, balancer: &Balancer) -> f64 {
    let group = schedule_weights(step, s).get(term_group(term));
    effective_weight(lambda, group, balancer_multiplier(term, balancer, s))
}
