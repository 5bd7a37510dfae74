//! Settings, read from TOML. Every field has a default that works; `validate` names the bad field.

use crate::loss_weights::{find_term_group, Group, TERM_GROUPS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest `data.downscale`: beyond it the images of any real capture are a few pixels wide.
pub const MAX_DOWNSCALE: u32 = 64;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data: DataConfig,
    pub field: FieldConfig,
    pub train: TrainConfig,
    pub loss: LossConfig,
    pub schedule: ScheduleConfig,
    pub stability: StabilityConfig,
}

/// Gradient clipping and the anomaly detector (SPEC §4): the gradient's global norm is reduced on the
/// device every step; a step whose loss or norm lies `anomaly_sigma` standard deviations above the
/// mean of the last `anomaly_window` accepted steps, or is not finite, is skipped; after
/// `restore_after` anomalies in a row the last good snapshot comes back and the learning rate is cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StabilityConfig {
    /// Largest global gradient norm: a larger gradient is scaled down to it (0: no clipping).
    pub clip_grad_norm: f32,
    /// Standard deviations above the recent mean that make a loss or gradient norm an anomaly
    /// (0: the detector is off; non-finite values are then only replaced by 0 entry by entry).
    pub anomaly_sigma: f32,
    /// Accepted steps the detector's mean and deviation are taken over (2..=32).
    pub anomaly_window: u32,
    /// An anomaly must also be at least this multiple of that mean. On 10 values, 3 deviations
    /// alone flag 2-6 % of a healthy run's steps: the gradient norm varies from batch to batch with a
    /// heavy tail (up to 1.9x its recent mean with lego-200's 2048 rays, 2.7x with the tests' 256,
    /// three steps in a row), while a fault is a NaN or a rise of orders of magnitude.
    pub anomaly_min_ratio: f32,
    /// Anomalies in a row that restore the last good snapshot and cut the learning rate (0: never).
    pub restore_after: u32,
    /// Factor on the learning rate at each restore.
    pub restore_lr_factor: f32,
    /// Steps between in-memory snapshots of parameters and moments (taken at a statistics read
    /// without anomalies; 0: none, so nothing can be restored).
    pub snapshot_every: u32,
    /// Largest snapshot kept in host memory, MiB (parameters and both moments, 12 bytes per
    /// parameter). A larger model takes no snapshots (logged once): its anomalies are still skipped,
    /// but nothing can be restored. Each snapshot is a read-back of the whole model.
    pub snapshot_max_mib: u32,
}

impl Default for StabilityConfig {
    fn default() -> Self {
        Self {
            clip_grad_norm: 0.0,
            anomaly_sigma: 3.0,
            anomaly_window: 10,
            anomaly_min_ratio: 5.0,
            restore_after: 3,
            restore_lr_factor: 0.5,
            snapshot_every: 100,
            snapshot_max_mib: 2048,
        }
    }
}

/// What the learning rate's factor depends on besides the step: the plateau reductions and the
/// anomaly restores so far (kept by the trainer, saved in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LrState {
    /// Best mean loss seen at a statistics read, and its step.
    pub best: Option<f64>,
    pub best_step: u32,
    pub plateau_reductions: u32,
    pub last_reduction_step: u32,
    /// Product of the restores' cuts (`stability.restore_lr_factor` each).
    pub restore_factor: f32,
}

impl Default for LrState {
    fn default() -> Self {
        Self { best: None, best_step: 0, plateau_reductions: 0, last_reduction_step: 0, restore_factor: 1.0 }
    }
}

/// Longest history the device keeps for the anomaly detector (`stability.anomaly_window`).
pub const MAX_ANOMALY_WINDOW: u32 = 32;

/// How images become training rays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Colour that transparent pixels are composited on, and the volume renderer's background.
    pub background: [f32; 3],
    /// For data without a test split: every Nth frame is held out.
    pub holdout_every: u32,
    /// Image pyramid depth: level l is 1/2^l of full resolution (5 levels: 1 .. 1/16).
    pub pyramid_levels: u32,
    /// Fraction of patches drawn from the coarser pyramid levels (the rest from full resolution).
    pub coarse_fraction: f32,
    /// Half-edge of the world-space box mapped onto the scene cube, when the format gives none.
    pub scene_bound: f32,
    /// Train with a random background behind transparent pixels (photos with alpha), so empty space
    /// is learned as empty; evaluation always uses `background`.
    pub random_background: bool,
    /// Shrink every image by this integer factor while loading (`--downscale` overrides): each pixel
    /// becomes the mean of an N x N block, sizes divide with floor, focal lengths and principal point
    /// divide by N. 0: automatic, full size unless the decoded images would not fit in half the
    /// available host memory, then the smallest power of two that fits.
    pub downscale: u32,
}

/// The octree and each node's field (SPEC §1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldConfig {
    /// Deepest octree level (the root is level 0).
    pub max_depth: u32,
    /// Hash-grid levels per node (2 features each).
    pub hash_levels: u32,
    /// log2 of the hash table size per level.
    pub log2_table_size: u32,
    /// Coarsest grid resolution across a node.
    pub base_resolution: u32,
    /// Finest grid resolution across a node; gsd = node edge / finest_resolution.
    pub finest_resolution: u32,
    /// Width of the hidden layers of both decoders.
    pub hidden_width: u32,
    /// Geometric features passed from the density decoder to the colour decoder.
    pub geo_features: u32,
    /// Degree of the spherical-harmonics view-direction encoding (1..=4).
    pub sh_degree: u32,
    /// Upper clamp on density.
    pub max_density: f32,
}

impl TrainConfig {
    /// The learning-rate schedule's factor at `step` (SPEC §4): exponential decay from
    /// `lr_decay_start` over `lr_decay_steps` to `lr_final_ratio` (never compounding), times the cosine
    /// of the warm restarts, times the plateau reductions and restore cuts so far (`state`), never below
    /// 0.01. A pure function, so the viewer can draw the whole planned curve and tests can pin it.
    pub fn lr_factor(&self, step: u32, state: &LrState) -> f32 {
        let progress = (step.saturating_sub(self.lr_decay_start) as f32 / self.lr_decay_steps.max(1) as f32).min(1.0);
        let decay = self.lr_final_ratio.powf(progress);
        let cosine = if self.lr_restart_period > 0 {
            let phase = (step % self.lr_restart_period) as f32 / self.lr_restart_period as f32;
            let floor = self.lr_restart_floor;
            floor + (1.0 - floor) * 0.5 * (1.0 + (std::f32::consts::PI * phase).cos())
        } else {
            1.0
        };
        let plateau = self.lr_plateau_factor.powi(state.plateau_reductions as i32);
        (decay * cosine * plateau * state.restore_factor).max(0.01)
    }

    /// The plateau state after a statistics read at `step` with mean loss `loss` (SPEC §4: a
    /// reduction after `lr_plateau_patience` steps without a new best). Non-finite losses are ignored.
    pub fn lr_plateau_update(&self, state: &mut LrState, step: u32, loss: f64) {
        if !loss.is_finite() {
            return;
        }
        if state.best.is_none_or(|best| loss < best * (1.0 - 1e-4)) {
            state.best = Some(loss);
            state.best_step = step;
        } else if self.lr_plateau_patience > 0
            && step.saturating_sub(state.best_step.max(state.last_reduction_step)) >= self.lr_plateau_patience
        {
            state.plateau_reductions += 1;
            state.last_reduction_step = step;
        }
    }

    /// Tiles per side of a structure patch.
    pub fn group_tiles(&self) -> u32 {
        (self.structure_patch_size / self.patch_size.max(1)).max(1)
    }

    /// Patches per micro-batch: the structure patches' tiles and the lone patches.
    pub fn patches_per_micro_batch(&self) -> u32 {
        self.structure_patches * self.group_tiles() * self.group_tiles() + self.patches_per_batch
    }

    /// The smallest chunk of a step's patches: one structure patch's tiles (they stay in one chunk),
    /// else one patch.
    pub fn chunk_unit(&self) -> u32 {
        if self.structure_patches > 0 {
            self.group_tiles() * self.group_tiles()
        } else {
            1
        }
    }

    /// `patches` as a chunk of a step: a multiple of `chunk_unit` (the structure patches come
    /// first), unless it is the whole step; 0 when not even one unit fits.
    pub fn align_chunk(&self, patches: u32) -> u32 {
        if patches < self.patches_per_step() {
            patches - patches % self.chunk_unit()
        } else {
            patches
        }
    }

    /// Patches per step: `accumulate_steps` micro-batches (all structure patches' tiles first).
    pub fn patches_per_step(&self) -> u32 {
        self.accumulate_steps.max(1) * self.patches_per_micro_batch()
    }

    /// Whether step `step` draws its samples from a proposal (the hierarchical and importance
    /// phases).
    pub fn resamples_at(&self, step: u32) -> bool {
        self.hierarchical_from.is_some_and(|from| step >= from)
    }

    /// Whether the occupancy grid skips empty cells at step `step` (from `occupancy_warmup`).
    pub fn skips_at(&self, step: u32) -> bool {
        self.occupancy_resolution > 0 && step >= self.occupancy_warmup
    }

    /// The sampling phase of step `step` (SPEC §5): uniform, occupancy (uniform with the grid's
    /// skipping), hierarchical, importance (hierarchical with the grid's skipping).
    pub fn sampling_phase(&self, step: u32) -> SamplingPhase {
        match (self.resamples_at(step), self.skips_at(step)) {
            (false, false) => SamplingPhase::Uniform,
            (false, true) => SamplingPhase::Occupancy,
            (true, false) => SamplingPhase::Hierarchical,
            (true, true) => SamplingPhase::Importance,
        }
    }

    /// Samples per ray and cut the training batches hold at most: `samples_per_ray` while a step
    /// samples uniformly, `resample_samples` while it resamples, and room for one cut's proposal.
    pub fn max_samples_per_ray(&self, cuts: u32) -> u32 {
        match self.hierarchical_from {
            None => self.samples_per_ray,
            Some(from) => {
                let uniform = if from > 0 { self.samples_per_ray } else { 0 };
                uniform.max(self.resample_samples).max(self.proposal_samples.div_ceil(cuts.max(1)))
            }
        }
    }

    /// Samples per ray and cut of the training batches at `step`.
    pub fn samples_per_ray_at(&self, step: u32) -> u32 {
        if self.resamples_at(step) {
            self.resample_samples
        } else {
            self.samples_per_ray
        }
    }

    /// The largest square of pixels a loss on image structure sees.
    pub fn largest_square(&self) -> u32 {
        if self.structure_patches > 0 {
            self.patch_size.max(self.structure_patch_size)
        } else {
            self.patch_size
        }
    }
}

/// The loss terms and how they are weighted (SPEC §3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the mean squared error of the rendered colour.
    pub lambda_mse: f32,
    /// Weight of the total variation of the rendered patches' colour (mean absolute difference of
    /// adjacent pixels per channel, horizontally plus vertically); needs train.patch_size >= 2.
    pub lambda_tv: f32,
    /// Weight of the total variation of the rendered patches' depth.
    pub lambda_tv_depth: f32,
    /// Weight of the density sparsity: the mean density over the step's sample slots.
    pub lambda_sparsity: f32,
    /// Weight of 1 - SSIM of the rendered patches' colour (box windows of `ssim_window` pixels wholly
    /// inside a patch); needs train.patch_size >= ssim_window.
    pub lambda_ssim: f32,
    /// Edge of SSIM's square window in pixels (2..=16).
    pub ssim_window: u32,
    /// Weight of the depth agreement between each rendered cut and the next finer one (smooth L1,
    /// mean over rays; needs coarse_cuts >= 1 to have a pair).
    pub lambda_depth_consistency: f32,
    /// Weight of the parameter L2: the mean of p^2 over every parameter of the tree. Its gradient is
    /// applied by Adam to the entries a step trains (lazy decay, as sparse optimisers do).
    pub lambda_param: f32,
    /// Weight of the normal agreement between a node and its parent: 1 - cosine of their density
    /// gradients (central differences over a stencil of the child's gsd), mean over the probes.
    pub lambda_normal_consistency: f32,
    /// Weight of Inf-NeRF's inter-level loss: a parent's opacity over the child's gsd at a point
    /// against the child's mean over a stencil around it, squared, mean over the probes.
    pub lambda_density_consistency: f32,
    /// Weight of the seam continuity: two nodes of one depth agree on opacity and colour at points
    /// of the face they share, mean over the probes.
    pub lambda_seam: f32,
    /// Probe groups per step for the three terms above (each a 7-point stencil in a child node and
    /// its parent, and a seam point in two neighbours: 16 field evaluations), 1..=65536; spread over
    /// the step's chunks, at most one per ray of a chunk. Made only while one of them weighs more
    /// than 0.
    pub probes: u32,
    /// Weight of LPIPS (AlexNet) between the rendered structure patches and their targets, per cut;
    /// needs `lpips_weights` and train.structure_patches of at least 31 pixels a side. Without a
    /// weights file the term is reported unavailable and weighs 0.
    pub lambda_lpips: f32,
    /// The LPIPS network's weights: a safetensors file (scripts/convert_lpips.py converts the
    /// official LPIPS heads and torchvision's AlexNet). Relative to the config file.
    pub lpips_weights: Option<PathBuf>,
    /// Weight of the adversarial term (seed §1.4, off by default): the non-saturating generator
    /// loss of a small patch discriminator (src/adversarial.rs) on the rendered structure patches,
    /// per cut. The discriminator trains alternately with the field, on the same patches, with its
    /// own Adam; needs train.structure_patches of at least 16 pixels a side.
    pub lambda_adversarial: f32,
    /// The discriminator's learning rate (Adam, betas 0.5 and 0.999).
    pub discriminator_lr: f32,
    /// The smooth-L1 threshold of the depth consistency, in scene units (the scene is the cube
    /// [-1, 1]^3): differences below it are squared, above it linear.
    pub huber_delta: f32,
    /// Level weights of the rendered tree cuts: w_k = 2^(-level_gamma * k) / sum over the cuts
    /// rendered. Signed: the seed's formula (gamma > 0) weighs the root most, although its comment
    /// says finer levels should weigh more (gamma < 0 does that).
    pub level_gamma: f32,
    /// Coarser tree cuts rendered per step besides the finest (drawn at random), 0..=3.
    pub coarse_cuts: u32,
    /// The coarser cuts are rendered on every `coarse_every`-th step only (>= 1); the other steps
    /// render the finest cut alone, at the cost of a step without them. The terms between cuts
    /// (depth consistency, the level-weighted reconstruction of the coarser cuts) then act on those
    /// steps, and are logged as means over them.
    pub coarse_every: u32,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            lambda_mse: 1.0,
            lambda_tv: 0.0,
            lambda_tv_depth: 0.0,
            lambda_sparsity: 0.0,
            lambda_ssim: 0.0,
            ssim_window: 4,
            lambda_depth_consistency: 0.0,
            lambda_param: 0.0,
            lambda_normal_consistency: 0.0,
            lambda_density_consistency: 0.0,
            lambda_seam: 0.0,
            probes: 1024,
            lambda_lpips: 0.0,
            lpips_weights: None,
            lambda_adversarial: 0.0,
            discriminator_lr: 1e-4,
            huber_delta: 0.05,
            level_gamma: 1.0,
            coarse_cuts: 0,
            coarse_every: 1,
        }
    }
}

/// How the loss terms' weights change over the training (SPEC §3.6, §3.7; `loss_weights`): the
/// seed's schedule of four groups of terms, its dynamic balancer, and overrides of either.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Steps over which the geometric terms ramp linearly from 0 to their lambdas (0: full weight
    /// from the start).
    pub geometric_warmup_steps: u32,
    /// The regularization terms weigh 0 until this step, then ramp linearly to their lambdas over as
    /// many steps again (0: full weight from the start).
    pub regularization_start_steps: u32,
    /// The consistency terms rise linearly to their lambdas at this step, then decay linearly over as
    /// many steps again, floored at 0.1 of their lambdas.
    pub consistency_peak_steps: u32,
    /// Dynamic balancing: each term weighed by 1 / (1 + CV) of its last `balancer_window` values.
    /// Off by default: with Adam a term's overall scale hardly matters, so the balancer only acts
    /// between terms, and the default losses (MSE alone) leave it nothing to balance but noise.
    pub balancer: bool,
    /// Values of each term the balancer's CV is taken over (the seed's 10); 1 until that many exist.
    pub balancer_window: u32,
    /// Replaces the schedule's rgb multiplier: "auto" (the schedule) or a number in [0, 1].
    #[serde(with = "auto_or_number")]
    pub override_rgb: Option<f32>,
    /// Replaces the schedule's geometric multiplier: "auto" or a number in [0, 1].
    #[serde(with = "auto_or_number")]
    pub override_geometric: Option<f32>,
    /// Replaces the schedule's regularization multiplier: "auto" or a number in [0, 1].
    #[serde(with = "auto_or_number")]
    pub override_regularization: Option<f32>,
    /// Replaces the schedule's consistency multiplier: "auto" or a number in [0, 1].
    #[serde(with = "auto_or_number")]
    pub override_consistency: Option<f32>,
    /// Replaces the balancer's weight of the terms named, e.g. `{ ssim = 1.0 }`, each in [0, 1]
    /// (whether `balancer` is on or not); the terms left out keep theirs.
    pub balancer_override: BTreeMap<String, f32>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            geometric_warmup_steps: 500,
            regularization_start_steps: 1000,
            consistency_peak_steps: 2000,
            balancer: false,
            balancer_window: 10,
            override_rgb: None,
            override_geometric: None,
            override_regularization: None,
            override_consistency: None,
            balancer_override: BTreeMap::new(),
        }
    }
}

impl ScheduleConfig {
    /// The override of `group`'s schedule multiplier (None: the schedule's own).
    pub fn group_override(&self, group: Group) -> Option<f32> {
        match group {
            Group::Rgb => self.override_rgb,
            Group::Geometric => self.override_geometric,
            Group::Regularization => self.override_regularization,
            Group::Consistency => self.override_consistency,
        }
    }

    fn group_override_mut(&mut self, group: Group) -> &mut Option<f32> {
        match group {
            Group::Rgb => &mut self.override_rgb,
            Group::Geometric => &mut self.override_geometric,
            Group::Regularization => &mut self.override_regularization,
            Group::Consistency => &mut self.override_consistency,
        }
    }

    /// The same settings with no override: the bare schedule and balancer, for plotting behind an
    /// override.
    pub fn without_overrides(&self) -> Self {
        Self {
            override_rgb: None,
            override_geometric: None,
            override_regularization: None,
            override_consistency: None,
            balancer_override: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// An optional multiplier in TOML, which has no null: the string "auto" is None.
mod auto_or_number {
    use serde::{de, Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(value: &Option<f32>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_f32(*v),
            None => serializer.serialize_str("auto"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f32>, D::Error> {
        struct AutoOrNumber;
        impl de::Visitor<'_> for AutoOrNumber {
            type Value = Option<f32>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "auto" => Ok(None),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Some(v as f32))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Some(v as f32))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(v as f32))
            }
        }
        deserializer.deserialize_any(AutoOrNumber)
    }
}

/// The optimisation (MSE loss and Adam, for now).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Training steps (`--steps` overrides; `--max-seconds` alone trains until the time is up).
    pub steps: u32,
    /// Edge of the square image patches a batch is made of.
    pub patch_size: u32,
    /// Patches per step: rays per step = patches_per_batch * patch_size^2 (+ the structure patches).
    pub patches_per_batch: u32,
    /// Larger patches per step besides those, for the losses on image structure (SSIM, TV): each a
    /// square of structure_patch_size pixels, drawn like the others.
    pub structure_patches: u32,
    /// Edge of the structure patches: a multiple of patch_size (each is made of patch_size tiles).
    pub structure_patch_size: u32,
    /// Stratified samples per ray across the scene cube.
    pub samples_per_ray: u32,
    /// Adam learning rate of the hash tables.
    pub lr_hash: f32,
    /// Adam learning rate of the decoders.
    pub lr_mlp: f32,
    /// Adam's first-moment decay.
    pub adam_beta1: f32,
    /// Adam's second-moment decay.
    pub adam_beta2: f32,
    /// Adam's epsilon.
    pub adam_eps: f32,
    /// Learning rate at the end of the decay, as a fraction of the initial one.
    pub lr_final_ratio: f32,
    /// Step where the exponential learning-rate decay begins.
    pub lr_decay_start: u32,
    /// Steps over which the rate decays to lr_final_ratio.
    pub lr_decay_steps: u32,
    /// Plateau reduction: steps without a new best loss (at the statistics reads) before the rate is
    /// multiplied by lr_plateau_factor (0: off).
    pub lr_plateau_patience: u32,
    /// Factor of each plateau reduction.
    pub lr_plateau_factor: f32,
    /// Warm restarts: period in steps of the cosine annealing from the scheduled rate down to
    /// lr_restart_floor of it and back up at each restart (0: off).
    pub lr_restart_period: u32,
    /// The cosine's lowest point, as a fraction of the scheduled rate.
    pub lr_restart_floor: f32,
    /// Cells per axis of the occupancy grid that lets samples skip empty space (0: no grid).
    pub occupancy_resolution: u32,
    /// A sample is skipped when its cell's density times its step length is below this.
    pub occupancy_threshold: f32,
    /// Each grid update keeps max(old * decay, new density).
    pub occupancy_decay: f32,
    /// Steps between grid updates.
    pub occupancy_update_every: u32,
    /// Steps before the grid is used to skip samples (it is updated from the start).
    pub occupancy_warmup: u32,
    /// Fraction of the samples in empty cells that are evaluated anyway while training, so that a region
    /// the grid emptied before the field learned it (a thin pole, say) still gets a gradient and can
    /// come back; without it such a node can stop learning for good.
    pub occupancy_explore: f32,
    /// The sampling schedule (SPEC §5): stratified uniform samples until `occupancy_warmup`, then
    /// the occupancy grid skips empty cells. From `hierarchical_from` on (absent: never), a ray's
    /// samples are drawn by inverse CDF from a proposal: `proposal_samples` stratified samples
    /// rendered (forward only) at the tree cut `proposal_cut`; their weights, dilated over the
    /// neighbouring bins and mixed with `proposal_floor` of uniform, make a piecewise-constant PDF,
    /// and `resample_samples` intervals of equal probability take one sample each. Before
    /// `occupancy_warmup` that is the hierarchical phase; after it the proposal and the resampled
    /// samples also skip empty cells: the importance phase. Rendering a view (eval, viewer) keeps
    /// `samples_per_ray` stratified samples with the grid.
    pub hierarchical_from: Option<u32>,
    /// Stratified samples per ray of the proposal (hierarchical and importance phases).
    pub proposal_samples: u32,
    /// Depth of the tree cut the proposal renders (capped at the tree's depth).
    pub proposal_cut: u32,
    /// Samples per ray drawn from the proposal's PDF, each trained like a stratified one.
    pub resample_samples: u32,
    /// Share of the proposal's PDF spread uniformly over the ray, so that a surface the proposal
    /// misses still gets samples.
    pub proposal_floor: f32,
    /// Steps between metric lines (and read-backs of the loss statistics).
    pub log_every: u32,
    /// Seed of the initialisation, the batches and the kernels' jitter.
    pub seed: u64,
    /// Largest device buffer in MiB (0: the adapter's largest storage binding). Parameters,
    /// gradients and Adam moments are split into pages of whole nodes, and a step's patches go
    /// through the passes in chunks whose per-sample buffers fit; lower it to test both.
    pub max_buffer_mb: u32,
    /// Micro-batches per optimiser step (gradient accumulation): a step draws this many times
    /// `patches_per_batch` (and `structure_patches`) and runs them through the passes one
    /// micro-batch at a time, their gradients summed before Adam, so the device holds the
    /// per-sample buffers of one micro-batch only. 1: none.
    pub accumulate_steps: u32,
    /// Device memory budget in MiB for everything the trainer allocates (0: none). At each
    /// statistics read the patches that go through the passes at once (a step's chunk) shrink x0.8
    /// while more than 90% of the budget is in use and grow x1.2 while less than 70% is, as long as
    /// the grown chunk is expected to stay under 90% and within one step. The step's batch, and so
    /// the optimisation, stays the same: only how much of it is on the device at once changes.
    pub memory_budget_mb: u32,
    /// The backward pass recomputes each sample's field (true: the hash encoding and the decoders'
    /// forward run again, nothing stored) or reads the activations the forward stored (false: the
    /// seed's activation checkpointing turned off; `ACT_WORDS` floats per sample slot of a chunk, and
    /// the chunk shrinks so they fit one buffer).
    pub recompute_backward: bool,
    /// `f32` everywhere, or `mixed`: f16 copies of the hash tables that the field passes read
    /// (Adam keeps the f32 master weights and refreshes the copy), f16 per-sample gradients under
    /// dynamic loss scaling, and f16 stored activations (with `recompute_backward = false`). Needs
    /// the adapter's SHADER_F16; without it the trainer says so and trains in f32.
    pub precision: Precision,
    /// Mixed precision: the loss scale the per-sample gradients start with (a power of two).
    pub loss_scale_init: f32,
    /// Mixed precision: the loss scale doubles after this many steps in a row without an overflow;
    /// an overflow halves it and skips the step.
    pub loss_scale_growth_steps: u32,
}

/// The number formats of training (`train.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Mixed,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Mixed => "mixed",
        }
    }
}

/// The largest loss scale (2^24: a larger one overflows f16 on any gradient worth keeping).
pub const MAX_LOSS_SCALE: f32 = 16_777_216.0;

/// How a training step places its samples (`TrainConfig::sampling_phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingPhase {
    /// Stratified samples, all evaluated.
    Uniform,
    /// Stratified samples; those in cells the occupancy grid marks empty are skipped.
    Occupancy,
    /// Resampled by inverse CDF from a coarse cut's proposal.
    Hierarchical,
    /// Resampled from the proposal, both skipping empty cells.
    Importance,
}

impl SamplingPhase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Occupancy => "occupancy",
            Self::Hierarchical => "hierarchical",
            Self::Importance => "importance",
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            background: [1.0, 1.0, 1.0],
            holdout_every: 8,
            pyramid_levels: 5,
            coarse_fraction: 0.2,
            scene_bound: 1.5,
            random_background: true,
            downscale: 0,
        }
    }
}

impl Default for FieldConfig {
    fn default() -> Self {
        Self {
            max_depth: 1,
            hash_levels: 8,
            log2_table_size: 14,
            base_resolution: 8,
            finest_resolution: 128,
            hidden_width: 32,
            geo_features: 7,
            sh_degree: 3,
            max_density: 1.0e4,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 5000,
            patch_size: 2,
            patches_per_batch: 512,
            structure_patches: 0,
            structure_patch_size: 8,
            samples_per_ray: 128,
            lr_hash: 1.0e-2,
            lr_mlp: 1.0e-2,
            adam_beta1: 0.9,
            adam_beta2: 0.99,
            adam_eps: 1.0e-15,
            lr_final_ratio: 0.03,
            lr_decay_start: 500,
            lr_decay_steps: 20000,
            lr_plateau_patience: 0,
            lr_plateau_factor: 0.5,
            lr_restart_period: 0,
            lr_restart_floor: 0.1,
            occupancy_resolution: 64,
            occupancy_threshold: 0.01,
            occupancy_decay: 0.6,
            occupancy_update_every: 8,
            occupancy_warmup: 16,
            occupancy_explore: 0.01,
            hierarchical_from: None,
            proposal_samples: 64,
            proposal_cut: 0,
            resample_samples: 32,
            proposal_floor: 0.05,
            log_every: 25,
            seed: 1,
            max_buffer_mb: 0,
            accumulate_steps: 1,
            memory_budget_mb: 0,
            recompute_backward: true,
            precision: Precision::F32,
            loss_scale_init: 65536.0,
            loss_scale_growth_steps: 1000,
        }
    }
}

/// The settings that may change while training (through the trainer's command API), by TOML path.
/// Besides these, `schedule.balancer_override.<term>` for every term of `loss_weights::TERM_GROUPS`.
/// The override keys take NaN for "auto" (the computed multiplier), and `live` reads "auto" as NaN;
/// `schedule.balancer` takes 0 (off) or 1 (on).
pub const LIVE_SETTINGS: [&str; 38] = [
    "loss.lambda_mse",
    "loss.lambda_tv",
    "loss.lambda_tv_depth",
    "loss.lambda_sparsity",
    "loss.lambda_ssim",
    "loss.lambda_depth_consistency",
    "loss.lambda_param",
    "loss.lambda_normal_consistency",
    "loss.lambda_density_consistency",
    "loss.lambda_seam",
    "loss.lambda_lpips",
    "loss.lambda_adversarial",
    "loss.level_gamma",
    "loss.coarse_every",
    "train.lr_hash",
    "train.lr_mlp",
    "train.lr_final_ratio",
    "train.lr_decay_start",
    "train.lr_decay_steps",
    "train.lr_plateau_patience",
    "train.lr_plateau_factor",
    "train.lr_restart_period",
    "train.lr_restart_floor",
    "train.log_every",
    "train.occupancy_threshold",
    "train.occupancy_explore",
    "data.coarse_fraction",
    "schedule.geometric_warmup_steps",
    "schedule.regularization_start_steps",
    "schedule.consistency_peak_steps",
    "schedule.balancer",
    "schedule.balancer_window",
    "schedule.override_rgb",
    "schedule.override_geometric",
    "schedule.override_regularization",
    "schedule.override_consistency",
    "stability.clip_grad_norm",
    "stability.anomaly_sigma",
];

/// The live keys of the per-term balancer overrides: this prefix and a term's name.
pub const BALANCER_OVERRIDE_KEY: &str = "schedule.balancer_override.";

/// A setting that cannot work, named by its TOML path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {field} {message}")]
    Invalid { file: String, field: &'static str, message: String },
    #[error("live setting {key}: {message}")]
    Live { key: String, message: String },
}

impl Config {
    /// The small, fast settings the tests use.
    pub fn tiny() -> Self {
        let mut config = Self::default();
        config.field.max_depth = 1;
        config.field.hash_levels = 4;
        config.field.log2_table_size = 10;
        config.field.base_resolution = 4;
        config.field.finest_resolution = 32;
        config.field.hidden_width = 16;
        config.field.geo_features = 3;
        config.field.sh_degree = 2;
        config.train.patch_size = 8;
        config.train.patches_per_batch = 4;
        config.train.samples_per_ray = 32;
        config
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let mut config = Self::from_toml(&text, &file)?;
        // files a config names are relative to it
        if let (Some(weights), Some(dir)) = (&config.loss.lpips_weights, path.parent()) {
            if weights.is_relative() {
                config.loss.lpips_weights = Some(dir.join(weights));
            }
        }
        Ok(config)
    }

    /// Parses and validates; `file` names the source in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.message().to_string() + &span_hint(text, e.span()),
        })?;
        config.validate(file)?;
        Ok(config)
    }

    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, message: &str| {
            Err(ConfigError::Invalid { file: file.to_string(), field, message: message.to_string() })
        };
        let f = &self.field;
        let t = &self.train;
        let d = &self.data;
        if !d.background.iter().all(|c| (0.0..=1.0).contains(c)) {
            return bad("data.background", "must have components in [0, 1]");
        }
        if d.holdout_every < 2 {
            return bad("data.holdout_every", "must be at least 2");
        }
        if !(1..=8).contains(&d.pyramid_levels) {
            return bad("data.pyramid_levels", "must be in 1..=8");
        }
        if !(0.0..=1.0).contains(&d.coarse_fraction) {
            return bad("data.coarse_fraction", "must be in [0, 1]");
        }
        if !(d.scene_bound.is_finite() && d.scene_bound > 0.0) {
            return bad("data.scene_bound", "must be a positive number");
        }
        if d.downscale > MAX_DOWNSCALE {
            return bad("data.downscale", &format!("must be at most {MAX_DOWNSCALE} (0: automatic)"));
        }
        if f.max_depth > 6 {
            return bad("field.max_depth", "must be at most 6");
        }
        if !(1..=16).contains(&f.hash_levels) {
            return bad("field.hash_levels", "must be in 1..=16");
        }
        if !(4..=22).contains(&f.log2_table_size) {
            return bad("field.log2_table_size", "must be in 4..=22");
        }
        if f.base_resolution < 2 {
            return bad("field.base_resolution", "must be at least 2");
        }
        if f.finest_resolution < f.base_resolution {
            return bad("field.finest_resolution", "must be at least field.base_resolution");
        }
        if !(1..=128).contains(&f.hidden_width) {
            return bad("field.hidden_width", "must be in 1..=128");
        }
        if !(1..=32).contains(&f.geo_features) {
            return bad("field.geo_features", "must be in 1..=32");
        }
        if !(1..=4).contains(&f.sh_degree) {
            return bad("field.sh_degree", "must be in 1..=4");
        }
        if !(f.max_density.is_finite() && f.max_density > 0.0) {
            return bad("field.max_density", "must be a positive number");
        }
        if t.steps == 0 {
            return bad("train.steps", "must be positive");
        }
        if !(1..=64).contains(&t.patch_size) {
            return bad("train.patch_size", "must be in 1..=64");
        }
        if t.patches_per_batch == 0 || t.patches_per_batch * t.patch_size * t.patch_size > 1 << 20 {
            return bad("train.patches_per_batch", "must be positive, with at most 2^20 rays per batch");
        }
        if !(1..=64).contains(&t.accumulate_steps) {
            return bad("train.accumulate_steps", "must be in 1..=64");
        }
        if !(t.structure_patch_size >= t.patch_size
            && t.structure_patch_size <= 64
            && t.structure_patch_size.is_multiple_of(t.patch_size))
        {
            return bad("train.structure_patch_size", "must be a multiple of train.patch_size, at most 64");
        }
        if u64::from(t.patches_per_micro_batch()) * u64::from(t.patch_size * t.patch_size) > 1 << 20 {
            return bad(
                "train.structure_patches",
                "at most 2^20 rays per batch, patches and structure patches together",
            );
        }
        if u64::from(t.patches_per_step()) * u64::from(t.patch_size * t.patch_size) > 1 << 22 {
            return bad("train.accumulate_steps", "makes more than 2^22 rays per step");
        }
        if !(t.loss_scale_init >= 1.0 && t.loss_scale_init <= MAX_LOSS_SCALE) {
            return bad("train.loss_scale_init", "must be in [1, 2^24]");
        }
        if t.loss_scale_growth_steps == 0 {
            return bad("train.loss_scale_growth_steps", "must be at least 1");
        }
        if !(2..=1024).contains(&t.samples_per_ray) {
            return bad("train.samples_per_ray", "must be in 2..=1024");
        }
        for (field, lr) in [("train.lr_hash", t.lr_hash), ("train.lr_mlp", t.lr_mlp)] {
            if !(lr.is_finite() && lr > 0.0) {
                return bad(field, "must be a positive number");
            }
        }
        for (field, beta) in [("train.adam_beta1", t.adam_beta1), ("train.adam_beta2", t.adam_beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(field, "must be in [0, 1)");
            }
        }
        if !(t.adam_eps.is_finite() && t.adam_eps > 0.0) {
            return bad("train.adam_eps", "must be a positive number");
        }
        if !(t.lr_final_ratio > 0.0 && t.lr_final_ratio <= 1.0) {
            return bad("train.lr_final_ratio", "must be in (0, 1]");
        }
        if !(t.lr_plateau_factor > 0.0 && t.lr_plateau_factor <= 1.0) {
            return bad("train.lr_plateau_factor", "must be in (0, 1]");
        }
        if !(t.lr_restart_floor >= 0.0 && t.lr_restart_floor <= 1.0) {
            return bad("train.lr_restart_floor", "must be in [0, 1]");
        }
        if t.occupancy_resolution > 256 {
            return bad("train.occupancy_resolution", "must be at most 256");
        }
        // every grid cell then lies in one octree node (the occupancy pass runs per node)
        if !t.occupancy_resolution.is_multiple_of(1 << f.max_depth) {
            return bad(
                "train.occupancy_resolution",
                &format!("must be a multiple of 2^field.max_depth = {} (or 0)", 1 << f.max_depth),
            );
        }
        if !(t.occupancy_threshold.is_finite() && t.occupancy_threshold >= 0.0) {
            return bad("train.occupancy_threshold", "must be a number >= 0");
        }
        if !(0.0..=1.0).contains(&t.occupancy_decay) {
            return bad("train.occupancy_decay", "must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&t.occupancy_explore) {
            return bad("train.occupancy_explore", "must be in [0, 1]");
        }
        if t.occupancy_update_every == 0 {
            return bad("train.occupancy_update_every", "must be positive");
        }
        if !(2..=1024).contains(&t.proposal_samples) {
            return bad("train.proposal_samples", "must be in 2..=1024");
        }
        if !(2..=1024).contains(&t.resample_samples) {
            return bad("train.resample_samples", "must be in 2..=1024");
        }
        if !(0.0..=1.0).contains(&t.proposal_floor) {
            return bad("train.proposal_floor", "must be in [0, 1]");
        }
        if t.log_every == 0 {
            return bad("train.log_every", "must be positive");
        }
        let l = &self.loss;
        for (field, lambda) in [
            ("loss.lambda_mse", l.lambda_mse),
            ("loss.lambda_tv", l.lambda_tv),
            ("loss.lambda_tv_depth", l.lambda_tv_depth),
            ("loss.lambda_sparsity", l.lambda_sparsity),
            ("loss.lambda_ssim", l.lambda_ssim),
            ("loss.lambda_depth_consistency", l.lambda_depth_consistency),
            ("loss.lambda_param", l.lambda_param),
            ("loss.lambda_normal_consistency", l.lambda_normal_consistency),
            ("loss.lambda_density_consistency", l.lambda_density_consistency),
            ("loss.lambda_seam", l.lambda_seam),
            ("loss.lambda_lpips", l.lambda_lpips),
            ("loss.lambda_adversarial", l.lambda_adversarial),
        ] {
            if !(lambda.is_finite() && lambda >= 0.0) {
                return bad(field, "must be a number >= 0");
            }
        }
        if !(l.level_gamma.is_finite() && l.level_gamma.abs() <= 16.0) {
            return bad("loss.level_gamma", "must be a number in [-16, 16]");
        }
        if !(2..=16).contains(&l.ssim_window) {
            return bad("loss.ssim_window", "must be in 2..=16");
        }
        if l.lambda_ssim > 0.0 && t.largest_square() < l.ssim_window {
            return bad(
                "loss.lambda_ssim",
                &format!(
                    "SSIM needs patches at least as large as its window ({} pixels): raise train.patch_size \
                     ({}), or add train.structure_patches of train.structure_patch_size ({})",
                    l.ssim_window, t.patch_size, t.structure_patch_size
                ),
            );
        }
        if !(l.huber_delta.is_finite() && l.huber_delta > 0.0) {
            return bad("loss.huber_delta", "must be a number > 0");
        }
        if l.lambda_lpips > 0.0
            && l.lpips_weights.is_some()
            && !(t.structure_patches > 0 && t.structure_patch_size >= crate::lpips::MIN_SIZE)
        {
            return bad(
                "loss.lambda_lpips",
                &format!(
                    "LPIPS runs on the structure patches, and its network needs at least {} pixels a side: \
                     set train.structure_patches > 0 and train.structure_patch_size >= 32 (now {} of {})",
                    crate::lpips::MIN_SIZE,
                    t.structure_patches,
                    t.structure_patch_size
                ),
            );
        }
        if l.lambda_adversarial > 0.0
            && !(t.structure_patches > 0 && t.structure_patch_size >= crate::adversarial::MIN_SIZE)
        {
            return bad(
                "loss.lambda_adversarial",
                &format!(
                    "the discriminator sees the structure patches: set train.structure_patches > 0 and \
                     train.structure_patch_size >= {} (now {} of {})",
                    crate::adversarial::MIN_SIZE,
                    t.structure_patches,
                    t.structure_patch_size
                ),
            );
        }
        if !(l.discriminator_lr.is_finite() && l.discriminator_lr > 0.0 && l.discriminator_lr <= 1.0) {
            return bad("loss.discriminator_lr", "must be in (0, 1]");
        }
        if !(1..=65536).contains(&l.probes) {
            return bad("loss.probes", "must be in 1..=65536");
        }
        if l.coarse_cuts as usize >= crate::gpu::records::MAX_CUTS {
            return bad("loss.coarse_cuts", "must be at most 3");
        }
        if l.coarse_every == 0 {
            return bad("loss.coarse_every", "must be at least 1 (1: every step)");
        }
        let st = &self.stability;
        if !(st.clip_grad_norm.is_finite() && st.clip_grad_norm >= 0.0) {
            return bad("stability.clip_grad_norm", "must be a number >= 0 (0: no clipping)");
        }
        if !(st.anomaly_sigma.is_finite() && st.anomaly_sigma >= 0.0) {
            return bad("stability.anomaly_sigma", "must be a number >= 0 (0: no detector)");
        }
        if !(2..=MAX_ANOMALY_WINDOW).contains(&st.anomaly_window) {
            return bad("stability.anomaly_window", &format!("must be in 2..={MAX_ANOMALY_WINDOW}"));
        }
        if !(st.anomaly_min_ratio.is_finite() && st.anomaly_min_ratio >= 1.0) {
            return bad("stability.anomaly_min_ratio", "must be a number >= 1");
        }
        if !(st.restore_lr_factor > 0.0 && st.restore_lr_factor <= 1.0) {
            return bad("stability.restore_lr_factor", "must be in (0, 1]");
        }
        let sc = &self.schedule;
        if sc.consistency_peak_steps == 0 {
            return bad("schedule.consistency_peak_steps", "must be positive");
        }
        if !(2..=10_000).contains(&sc.balancer_window) {
            return bad("schedule.balancer_window", "must be in 2..=10000");
        }
        for (field, value) in [
            ("schedule.override_rgb", sc.override_rgb),
            ("schedule.override_geometric", sc.override_geometric),
            ("schedule.override_regularization", sc.override_regularization),
            ("schedule.override_consistency", sc.override_consistency),
        ] {
            if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                return bad(field, "must be \"auto\" or a number in [0, 1]");
            }
        }
        for (term, &value) in &sc.balancer_override {
            if find_term_group(term).is_none() {
                let terms: Vec<&str> = TERM_GROUPS.iter().map(|(name, _)| *name).collect();
                return bad(
                    "schedule.balancer_override",
                    &format!("names no loss term {term:?}; terms: {}", terms.join(", ")),
                );
            }
            if !(0.0..=1.0).contains(&value) {
                return bad("schedule.balancer_override", &format!("{term} must be a number in [0, 1]"));
            }
        }
        Ok(())
    }

    /// The weight of loss term `name` (one of `gpu::records::LOSS_NAMES`).
    pub fn lambda(&self, name: &str) -> f32 {
        match name {
            "mse" => self.loss.lambda_mse,
            "tv" => self.loss.lambda_tv,
            "tv_depth" => self.loss.lambda_tv_depth,
            "sparsity" => self.loss.lambda_sparsity,
            "ssim" => self.loss.lambda_ssim,
            "depth_consistency" => self.loss.lambda_depth_consistency,
            "param" => self.loss.lambda_param,
            "normal_consistency" => self.loss.lambda_normal_consistency,
            "density_consistency" => self.loss.lambda_density_consistency,
            "seam" => self.loss.lambda_seam,
            "lpips" => self.loss.lambda_lpips,
            "adversarial" => self.loss.lambda_adversarial,
            // the discriminator's own loss trains the discriminator, never the field
            "discriminator" => 0.0,
            other => panic!("no loss term named {other}"),
        }
    }

    /// Changes a setting that may change while training (`LIVE_SETTINGS`), validated as a whole.
    pub fn set_live(&mut self, key: &str, value: f64) -> Result<(), ConfigError> {
        let mut changed = self.clone();
        let invalid = |message: String| ConfigError::Live { key: key.to_string(), message };
        match key {
            "loss.lambda_mse" => changed.loss.lambda_mse = value as f32,
            "loss.lambda_tv" => changed.loss.lambda_tv = value as f32,
            "loss.lambda_tv_depth" => changed.loss.lambda_tv_depth = value as f32,
            "loss.lambda_sparsity" => changed.loss.lambda_sparsity = value as f32,
            "loss.lambda_ssim" => changed.loss.lambda_ssim = value as f32,
            "loss.lambda_depth_consistency" => changed.loss.lambda_depth_consistency = value as f32,
            "loss.lambda_param" => changed.loss.lambda_param = value as f32,
            "loss.lambda_normal_consistency" => changed.loss.lambda_normal_consistency = value as f32,
            "loss.lambda_density_consistency" => changed.loss.lambda_density_consistency = value as f32,
            "loss.lambda_seam" => changed.loss.lambda_seam = value as f32,
            "loss.lambda_lpips" => changed.loss.lambda_lpips = value as f32,
            "loss.lambda_adversarial" => changed.loss.lambda_adversarial = value as f32,
            "loss.level_gamma" => changed.loss.level_gamma = value as f32,
            "train.lr_hash" => changed.train.lr_hash = value as f32,
            "train.lr_mlp" => changed.train.lr_mlp = value as f32,
            "train.lr_final_ratio" => changed.train.lr_final_ratio = value as f32,
            "train.lr_plateau_factor" => changed.train.lr_plateau_factor = value as f32,
            "train.lr_restart_floor" => changed.train.lr_restart_floor = value as f32,
            "stability.clip_grad_norm" => changed.stability.clip_grad_norm = value as f32,
            "stability.anomaly_sigma" => changed.stability.anomaly_sigma = value as f32,
            "train.lr_decay_start"
            | "train.lr_decay_steps"
            | "train.log_every"
            | "train.lr_plateau_patience"
            | "train.lr_restart_period"
            | "loss.coarse_every" => {
                if !(value.is_finite() && value >= 0.0 && value <= f64::from(u32::MAX) && value.fract() == 0.0) {
                    return Err(invalid(format!("must be a whole number >= 0, got {value}")));
                }
                let v = value as u32;
                match key {
                    "train.lr_decay_start" => changed.train.lr_decay_start = v,
                    "train.lr_decay_steps" => changed.train.lr_decay_steps = v,
                    "train.lr_plateau_patience" => changed.train.lr_plateau_patience = v,
                    "train.lr_restart_period" => changed.train.lr_restart_period = v,
                    "loss.coarse_every" => changed.loss.coarse_every = v,
                    _ => changed.train.log_every = v,
                }
            }
            "train.occupancy_threshold" => changed.train.occupancy_threshold = value as f32,
            "train.occupancy_explore" => changed.train.occupancy_explore = value as f32,
            "data.coarse_fraction" => changed.data.coarse_fraction = value as f32,
            "schedule.geometric_warmup_steps"
            | "schedule.regularization_start_steps"
            | "schedule.consistency_peak_steps"
            | "schedule.balancer_window" => {
                let v = whole(value).ok_or_else(|| invalid(format!("must be a whole number >= 0, got {value}")))?;
                let sc = &mut changed.schedule;
                match key {
                    "schedule.geometric_warmup_steps" => sc.geometric_warmup_steps = v,
                    "schedule.regularization_start_steps" => sc.regularization_start_steps = v,
                    "schedule.consistency_peak_steps" => sc.consistency_peak_steps = v,
                    _ => sc.balancer_window = v,
                }
            }
            "schedule.balancer" => {
                if value != 0.0 && value != 1.0 {
                    return Err(invalid(format!("must be 0 (off) or 1 (on), got {value}")));
                }
                changed.schedule.balancer = value == 1.0;
            }
            _ => {
                if let Some(group) = live_group(key) {
                    *changed.schedule.group_override_mut(group) = auto_or(value);
                } else if let Some(term) = live_term(key) {
                    if !(value.is_nan() || (0.0..=1.0).contains(&value)) {
                        return Err(invalid(format!("must be NaN (auto) or a number in [0, 1], got {value}")));
                    }
                    match auto_or(value) {
                        Some(v) => changed.schedule.balancer_override.insert(term.to_string(), v),
                        None => changed.schedule.balancer_override.remove(term),
                    };
                } else {
                    let message = format!(
                        "cannot change while training; these can: {}, {BALANCER_OVERRIDE_KEY}<term>",
                        LIVE_SETTINGS.join(", ")
                    );
                    return Err(invalid(message));
                }
            }
        }
        changed.validate("live setting")?;
        *self = changed;
        Ok(())
    }

    /// The current value of a live setting.
    pub fn live(&self, key: &str) -> Option<f64> {
        Some(match key {
            "loss.lambda_mse" => f64::from(self.loss.lambda_mse),
            "loss.lambda_tv" => f64::from(self.loss.lambda_tv),
            "loss.lambda_tv_depth" => f64::from(self.loss.lambda_tv_depth),
            "loss.lambda_sparsity" => f64::from(self.loss.lambda_sparsity),
            "loss.lambda_ssim" => f64::from(self.loss.lambda_ssim),
            "loss.lambda_depth_consistency" => f64::from(self.loss.lambda_depth_consistency),
            "loss.lambda_param" => f64::from(self.loss.lambda_param),
            "loss.lambda_normal_consistency" => f64::from(self.loss.lambda_normal_consistency),
            "loss.lambda_density_consistency" => f64::from(self.loss.lambda_density_consistency),
            "loss.lambda_seam" => f64::from(self.loss.lambda_seam),
            "loss.lambda_lpips" => f64::from(self.loss.lambda_lpips),
            "loss.lambda_adversarial" => f64::from(self.loss.lambda_adversarial),
            "loss.level_gamma" => f64::from(self.loss.level_gamma),
            "loss.coarse_every" => f64::from(self.loss.coarse_every),
            "train.lr_hash" => f64::from(self.train.lr_hash),
            "train.lr_mlp" => f64::from(self.train.lr_mlp),
            "train.lr_final_ratio" => f64::from(self.train.lr_final_ratio),
            "train.lr_decay_start" => f64::from(self.train.lr_decay_start),
            "train.lr_decay_steps" => f64::from(self.train.lr_decay_steps),
            "train.lr_plateau_patience" => f64::from(self.train.lr_plateau_patience),
            "train.lr_plateau_factor" => f64::from(self.train.lr_plateau_factor),
            "train.lr_restart_period" => f64::from(self.train.lr_restart_period),
            "train.lr_restart_floor" => f64::from(self.train.lr_restart_floor),
            "stability.clip_grad_norm" => f64::from(self.stability.clip_grad_norm),
            "stability.anomaly_sigma" => f64::from(self.stability.anomaly_sigma),
            "train.log_every" => f64::from(self.train.log_every),
            "train.occupancy_threshold" => f64::from(self.train.occupancy_threshold),
            "train.occupancy_explore" => f64::from(self.train.occupancy_explore),
            "data.coarse_fraction" => f64::from(self.data.coarse_fraction),
            "schedule.geometric_warmup_steps" => f64::from(self.schedule.geometric_warmup_steps),
            "schedule.regularization_start_steps" => f64::from(self.schedule.regularization_start_steps),
            "schedule.consistency_peak_steps" => f64::from(self.schedule.consistency_peak_steps),
            "schedule.balancer" => f64::from(u8::from(self.schedule.balancer)),
            "schedule.balancer_window" => f64::from(self.schedule.balancer_window),
            _ => {
                let value = match live_group(key) {
                    Some(group) => self.schedule.group_override(group),
                    None => self.schedule.balancer_override.get(live_term(key)?).copied(),
                };
                value.map_or(f64::NAN, f64::from)
            }
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// A live value that must be a step count or similar: a whole number in u32's range.
fn whole(value: f64) -> Option<u32> {
    (value.is_finite() && value >= 0.0 && value <= f64::from(u32::MAX) && value.fract() == 0.0).then_some(value as u32)
}

/// The group of a live key `schedule.override_<group>`.
fn live_group(key: &str) -> Option<Group> {
    let name = key.strip_prefix("schedule.override_")?;
    Group::ALL.into_iter().find(|g| g.name() == name)
}

/// The term of a live key `schedule.balancer_override.<term>`.
fn live_term(key: &str) -> Option<&str> {
    key.strip_prefix(BALANCER_OVERRIDE_KEY).filter(|term| find_term_group(term).is_some())
}

/// A live override value: NaN is "auto".
fn auto_or(value: f64) -> Option<f32> {
    (!value.is_nan()).then_some(value as f32)
}

impl Config {
    /// Floats of the field's activations the training forward keeps per sample for the backward:
    /// 0 while the backward recomputes them (`train.recompute_backward`).
    pub fn stored_act_words(&self) -> u32 {
        if self.train.recompute_backward {
            0
        } else {
            crate::field::FieldLayout::new(&self.field).act_words()
        }
    }

    /// Applies `--downscale` of the command line (it wins over `data.downscale`), validated.
    pub fn with_downscale(mut self, factor: Option<u32>) -> Result<Self, ConfigError> {
        if let Some(factor) = factor {
            if factor > MAX_DOWNSCALE {
                let message = format!("must be at most {MAX_DOWNSCALE} (0: automatic), got {factor}");
                return Err(ConfigError::Invalid { file: "--downscale".into(), field: "data.downscale", message });
            }
            self.data.downscale = factor;
        }
        Ok(self)
    }
}

/// " (line N)" and, where the span sits on a `key = value` line, the key's TOML path first.
fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let section = text
        .lines()
        .take(line_no)
        .filter_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .last()
        .map(|s| format!("{}.", s.trim()))
        .unwrap_or_default();
    match line.split_once('=') {
        Some((key, _)) if !line.trim_start().starts_with('[') => {
            format!(" (field {section}{}, line {line_no})", key.trim())
        }
        _ => format!(" (line {line_no})"),
    }
}
