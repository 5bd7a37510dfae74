//! The training step as a sequence of passes (src/kernels.rs), and renders with the same passes.
//!
//! A step: draw patches -> rays -> samples (per rendered tree cut) -> node_scan -> scatter ->
//! field_forward (per page) -> render_forward -> loss passes (each adds dLoss/d(output) per ray) ->
//! render_backward -> field_backward (per page) -> loss_stats -> grad_norm (per page) -> grad_guard ->
//! adam (per page); the occupancy grid
//! is refreshed every few steps before the forward. Everything stays on the device but for a small
//! statistics read-back every `log_every` steps; at most `MAX_IN_FLIGHT` steps are queued, so a
//! render request waits for little.

pub mod adversarial;
pub mod lpips;
pub mod model;
pub mod workspace;

use crate::config::{Config, LrState, Precision};
use crate::data::{pyramid, Camera, Dataset, Image};
use crate::field::{FieldLayout, SplitMix64};
use crate::gpu::kernel::{Compiled, Recorder};
use crate::gpu::records::{
    guard, AdamUniforms, Batch, GpuCamera, GuardUniforms, LossUniforms, Patch, RayOutput, Sampling, LOSS_NAMES,
    LOSS_PER_CUT, LOSS_TERMS, MAX_CUTS, NORM_PARTIALS, NO_CUT, OCC_PHASES, PROBES_PER_GROUP, SANITIZED_SLOTS,
    STATS_CUT_BATCHES, STATS_WORDS,
};
use crate::gpu::shader::KernelShape;
use crate::gpu::unrolled::WeightSource;
use crate::gpu::Gpu;
use crate::kernels::Kernels;
use crate::loss_weights::{self, Balancer, GroupWeights};
use crate::octree::Octree;
use crate::stability::{self, Fault, GuardReport, Snapshot, StabilityEvent};
use adversarial::{Adversarial, DiscriminatorParams};
use anyhow::{bail, Context, Result};
use lpips::Lpips;
use model::Model;
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::Arc;
use workspace::{Proposal, Workspace, WorkspaceSize};

/// Training steps queued on the device at most before `step` waits for the oldest.
pub const MAX_IN_FLIGHT: usize = 2;

/// One pyramid level of a training image on the host, packed RGBA8 (red in the low byte).
#[derive(Clone, Debug)]
struct LevelImage {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
}

/// Loss statistics read back from the device, averaged over the steps since the last read.
#[derive(Clone, Debug, PartialEq)]
pub struct LossStats {
    pub steps: u32,
    /// The weighted loss the optimiser saw.
    pub total: f64,
    /// Mean squared error per channel of the finest rendered cut.
    pub mse: f64,
    /// Per loss term, its mean at each rendered cut slot (slot 0 is the finest cut).
    pub terms: Vec<(&'static str, Vec<f64>)>,
    /// Samples per step the field evaluated (the rest were skipped as empty space).
    pub active_samples: f64,
    /// Of those, the proposal's (forward only; the hierarchical and importance phases).
    pub proposal_samples: f64,
    /// Non-finite values the kernels replaced by 0 since the last read, per kind of pass.
    pub sanitized: Vec<(&'static str, u32)>,
    /// At the read: every term's weight (lambda x schedule x balancer), the schedule's group
    /// multipliers, the balancer's weights, the level weights of the last step's cuts.
    pub term_weights: Vec<(&'static str, f64)>,
    pub schedule: GroupWeights,
    pub balancer: BTreeMap<String, f64>,
    pub level_weights: Vec<f32>,
    /// The gradient's statistics, anomalies, skipped and clipped steps (the guard's report).
    pub guard: GuardReport,
    /// Restores and plateau reductions at this read.
    pub events: Vec<StabilityEvent>,
    /// Terms that cannot run (their weight held at 0), and why.
    pub unavailable: BTreeMap<String, String>,
}

impl LossStats {
    pub fn sanitized_total(&self) -> u64 {
        self.sanitized.iter().map(|(_, n)| u64::from(*n)).sum()
    }
}

/// A rendered view.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub rgb: Image,
    pub depth: Vec<f32>,
    pub opacity: Vec<f32>,
    /// per pixel, the node that weighs most in it, -1 for none (`RayOutput::node`)
    pub node: Vec<f32>,
}

/// A view being rendered a chunk at a time (`Trainer::render_chunk`), so training can go on between.
#[derive(Clone, Debug)]
pub struct RenderJob {
    pub camera: Camera,
    pub cut: u32,
    next: u32,
    outputs: Vec<RayOutput>,
}

impl RenderJob {
    pub fn pixels(&self) -> u32 {
        self.camera.width * self.camera.height
    }

    pub fn done(&self) -> bool {
        self.next >= self.pixels()
    }

    /// The finished image (call when `done`).
    pub fn finish(self) -> Rendered {
        let (w, h) = (self.camera.width, self.camera.height);
        Rendered {
            rgb: Image {
                width: w,
                height: h,
                rgb: self.outputs.iter().flat_map(|r| r.rgb).collect(),
                alpha: Vec::new(),
            },
            depth: self.outputs.iter().map(|r| r.depth).collect(),
            opacity: self.outputs.iter().map(|r| r.opacity).collect(),
            node: self.outputs.iter().map(|r| r.node).collect(),
        }
    }
}

/// What one step renders and how its losses are weighted.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPlan {
    pub patches: Vec<Patch>,
    /// Rays with a target pixel (inside their image).
    pub valid_rays: u32,
    /// Tree cut of each rendered slot group; the first is the finest.
    pub cuts: Vec<u32>,
    pub cut_weights: Vec<f32>,
}

pub struct Trainer {
    pub gpu: Arc<Gpu>,
    pub config: Config,
    pub layout: FieldLayout,
    pub shape: KernelShape,
    pub octree: Octree,
    pub kernels: Kernels,
    pub model: Model,
    /// The training batch's buffers.
    pub train: Workspace,
    /// The buffers renders use (never the training ones).
    pub view: Workspace,
    /// Patches per training chunk: a step's patches go through the passes in chunks that fit one
    /// binding (usually one chunk).
    pub chunk_patches: u32,
    /// The most patches one buffer's worth of per-sample records holds (or the whole step).
    max_chunk: u32,
    pub step: u32,
    pub rng: SplitMix64,
    pyramid_levels: u32,
    images: Vec<Vec<LevelImage>>,
    in_flight: VecDeque<wgpu::SubmissionIndex>,
    /// Dispatches recorded by the last step.
    pub last_dispatches: u32,
    /// The dynamic loss balancer's history (SPEC §3.7), fed each term's value at every statistics
    /// read; its weights apply when `schedule.balancer` is on.
    pub balancer: Balancer,
    /// Level weights of the cuts the last step rendered (finest first).
    pub last_cut_weights: Vec<f32>,
    /// The learning rate's plateau reductions and restore cuts so far.
    pub lr_state: LrState,
    /// A fault to inject (`--inject-fault`).
    pub fault: Option<Fault>,
    /// The last good parameters and moments (`stability.snapshot_every`).
    pub snapshot: Option<Snapshot>,
    /// Restart the anomaly detector's history before the next step (a setting changed).
    pub guard_reset: bool,
    /// The LPIPS network's weights on the device (a weights file and structure patches), or why
    /// the term is unavailable (it then weighs 0).
    pub lpips_weights: Option<wgpu::Buffer>,
    pub lpips_unavailable: Option<String>,
    /// The adversarial term's discriminator (with structure patches it can see).
    pub discriminator: Option<DiscriminatorParams>,
}

impl Trainer {
    /// A fresh field on an octree built from the training cameras.
    pub fn new(gpu: Arc<Gpu>, config: Config, dataset: &Dataset) -> Result<Self> {
        let cameras: Vec<Camera> = dataset.train.iter().map(|v| v.camera).collect();
        let octree = Octree::build(&cameras, config.field.max_depth, config.field.finest_resolution);
        let params = FieldLayout::new(&config.field).init_params(octree.nodes.len(), config.train.seed);
        Self::with_state(gpu, config, dataset, octree, &params)
    }

    /// A trainer on `octree` with the parameters `params` (node after node), moments zero, step 0.
    pub fn with_state(
        gpu: Arc<Gpu>,
        config: Config,
        dataset: &Dataset,
        octree: Octree,
        params: &[f32],
    ) -> Result<Self> {
        if dataset.train.is_empty() {
            bail!("the dataset has no training views");
        }
        let layout = FieldLayout::new(&config.field);
        if params.len() as u64 != octree.nodes.len() as u64 * u64::from(layout.node_params) {
            bail!("{} parameters for {} nodes of {} each", params.len(), octree.nodes.len(), layout.node_params);
        }
        let max_buffer = match config.train.max_buffer_mb {
            0 => gpu.max_buffer_bytes(),
            mb => gpu.max_buffer_bytes().min(u64::from(mb) << 20),
        };
        // the per-sample buffers of one chunk of patches must fit one buffer
        let t = &config.train;
        let half = half_precision(&gpu, &config);
        let record = Workspace::largest_sample_record(&config, half);
        let per_patch = u64::from(t.patch_size * t.patch_size)
            * u64::from(1 + config.loss.coarse_cuts)
            * u64::from(t.max_samples_per_ray(1 + config.loss.coarse_cuts))
            * record;
        // one micro-batch at a time (gradient accumulation), in chunks that fit one buffer beside the
        // probes (at most loss.probes groups per chunk)
        let probe_bytes = u64::from(config.loss.probes) * u64::from(PROBES_PER_GROUP) * record;
        let max_chunk =
            (max_buffer.saturating_sub(probe_bytes) / per_patch).min(u64::from(t.patches_per_step())) as u32;
        let chunk_patches = t.align_chunk(max_chunk.min(t.patches_per_micro_batch()));
        if chunk_patches == 0 {
            bail!(
                "one patch's samples (or one structure patch's) need more than one buffer may hold: lower \
                 train.samples_per_ray or train.structure_patch_size"
            );
        }
        let storage = gpu.limits.max_compute_workgroup_storage_size;
        let mut shape = KernelShape::new(layout.clone(), gpu.float_atomics, storage, weight_source(&gpu, &layout));
        // a memory budget may split the step later: compile the passes that can run in chunks
        shape.flag_blocks = chunk_patches < t.patches_per_step() || t.memory_budget_mb > 0;
        shape.store_activations = !t.recompute_backward;
        shape.half = half;
        if !shape.fits(storage) {
            bail!(
                "the decoders need more workgroup memory than this adapter has ({storage} bytes): lower \
                 field.hidden_width"
            );
        }
        let kernels = Kernels::new(&gpu, &shape)?;
        // a driver that cannot build a pass may lose the device instead of failing the pass (NVIDIA's
        // Vulkan driver 580 with the unrolled 64-wide decoders): name the setting, not a buffer
        gpu.wait().with_context(|| {
            format!(
                "while the GPU driver built the passes for field.hidden_width = {}; a smaller width may work",
                config.field.hidden_width
            )
        })?;
        let model = Model::new(
            &gpu,
            &kernels,
            &layout,
            &octree,
            params,
            config.field.max_density,
            config.train.occupancy_resolution,
            shape.field_workgroup,
            max_buffer,
            half,
            config.train.loss_scale_init,
        )?;

        // the image pyramid of every training view stays on the host; a step uploads its pixels
        let min_side = dataset.train.iter().map(|v| v.image.width.min(v.image.height)).min().unwrap_or(1);
        let pyramid_levels = config.data.pyramid_levels.min(32 - min_side.leading_zeros()).max(1);
        let images = dataset
            .train
            .iter()
            .map(|view| {
                pyramid(&view.image, pyramid_levels as usize)
                    .iter()
                    .map(|level| {
                        let alpha = |i: usize| level.alpha.get(i).copied().unwrap_or(1.0);
                        let pixels =
                            level.rgb.chunks_exact(3).enumerate().map(|(i, rgb)| pack_rgba8(rgb, alpha(i))).collect();
                        LevelImage { width: level.width, height: level.height, pixels }
                    })
                    .collect()
            })
            .collect();

        let cameras: Vec<GpuCamera> = dataset.train.iter().map(|v| GpuCamera::from(&v.camera)).collect();
        // under a memory budget the workspaces start at their smallest (see `fit_memory_budget`)
        let first_chunk = if t.memory_budget_mb > 0 { t.chunk_unit().min(chunk_patches) } else { chunk_patches };
        let (lpips_weights, lpips_unavailable) = lpips_setup(&gpu, &config)?;
        if let Some(reason) = lpips_unavailable.as_ref().filter(|_| config.loss.lambda_lpips > 0.0) {
            log::warn!("loss.lambda_lpips is held at 0: LPIPS is unavailable ({reason})");
        }
        let discriminator = if t.structure_patches > 0 && t.structure_patch_size >= crate::adversarial::MIN_SIZE {
            Some(DiscriminatorParams::new(&gpu, &kernels, t.seed)?)
        } else {
            None
        };
        let (train, view) = Self::workspaces(
            &gpu,
            &kernels,
            &model,
            &config,
            cameras.len() as u32,
            first_chunk,
            PatchNets { lpips: lpips_weights.as_ref(), discriminator: discriminator.as_ref() },
        )?;
        gpu.write(&train.cameras, &cameras);
        let rng = SplitMix64(config.train.seed);
        let snapshot_mib = (model.n_params() * 12) >> 20;
        if config.stability.snapshot_every > 0 && snapshot_mib > u64::from(config.stability.snapshot_max_mib) {
            log::warn!(
                "no stability snapshots: the model's would take {snapshot_mib} MiB, more than \
                 stability.snapshot_max_mib ({}); anomalies are still skipped but cannot be restored",
                config.stability.snapshot_max_mib
            );
        }
        let mut trainer = Self {
            gpu,
            layout,
            shape,
            octree,
            kernels,
            model,
            train,
            view,
            chunk_patches: first_chunk,
            max_chunk,
            step: 0,
            rng,
            pyramid_levels,
            images,
            in_flight: VecDeque::new(),
            last_dispatches: 0,
            balancer: Balancer::new(config.schedule.balancer_window as usize),
            last_cut_weights: Vec::new(),
            lr_state: LrState::default(),
            fault: None,
            snapshot: None,
            guard_reset: false,
            lpips_weights,
            lpips_unavailable,
            discriminator,
            config,
        };
        trainer.fit_memory_budget(chunk_patches)?;
        Ok(trainer)
    }

    /// The training workspace for chunks of `chunk_patches` patches and the view workspace (as many
    /// rays as a training chunk renders over its cuts).
    fn workspaces(
        gpu: &Gpu,
        kernels: &Kernels,
        model: &Model,
        config: &Config,
        cameras: u32,
        chunk_patches: u32,
        nets: PatchNets,
    ) -> Result<(Workspace, Workspace)> {
        let t = &config.train;
        let train_size = WorkspaceSize {
            rays: chunk_patches * t.patch_size * t.patch_size,
            cuts: 1 + config.loss.coarse_cuts,
            samples_per_ray: t.max_samples_per_ray(1 + config.loss.coarse_cuts),
            patches: chunk_patches,
            cameras,
            probe_groups: probe_groups(config, chunk_patches),
            proposal_samples: if t.hierarchical_from.is_some() { t.proposal_samples } else { 0 },
            act_words: config.stored_act_words(),
            half: model.half,
        };
        let mut train = Workspace::new(gpu, kernels, model, "train", train_size)?;
        // the most structure patches a chunk holds
        let squares =
            (t.accumulate_steps * t.structure_patches).min(chunk_patches / (t.group_tiles() * t.group_tiles()));
        if let Some(weights) = nets.lpips {
            let before = gpu.allocated_bytes();
            train.lpips = Some(Lpips::new(gpu, kernels, &train, weights, t.structure_patch_size, squares)?);
            train.bytes += gpu.allocated_bytes().saturating_sub(before);
        }
        if let Some(disc) = nets.discriminator {
            let before = gpu.allocated_bytes();
            train.adversarial = Some(Adversarial::new(gpu, kernels, &train, disc, t.structure_patch_size, squares)?);
            train.bytes += gpu.allocated_bytes().saturating_sub(before);
        }
        let view_size = WorkspaceSize {
            rays: train_size.rays * train_size.cuts,
            cuts: 1,
            samples_per_ray: t.samples_per_ray,
            patches: 0,
            cameras: 1,
            probe_groups: 0,
            proposal_samples: 0,
            act_words: 0,
            half: model.half,
        };
        let view = Workspace::new(gpu, kernels, model, "view", view_size)?;
        Ok((train, view))
    }

    /// The chunk `train.memory_budget_mb` asks for now (SPEC §5): x0.8 while more than 90% of the
    /// budget is allocated; with `grow`, x1.2 while less than 70% is and the grown workspaces are
    /// expected to stay under 90%; at least one patch (one structure patch's tiles), at most
    /// `max_chunk`. Without a budget, the chunk as it is.
    fn memory_budget_chunk(&self, grow: bool) -> u32 {
        let t = &self.config.train;
        let chunk = self.chunk_patches;
        if t.memory_budget_mb == 0 {
            return chunk;
        }
        let budget = (u64::from(t.memory_budget_mb) << 20) as f64;
        let used = self.gpu.allocated_bytes() as f64;
        let target = if used > 0.9 * budget {
            (f64::from(chunk) * 0.8).floor() as u32
        } else if grow && used < 0.7 * budget {
            let grown = ((f64::from(chunk) * 1.2).ceil() as u32).min(self.max_chunk);
            let per_patch = (self.train.bytes + self.view.bytes) as f64 / f64::from(chunk);
            if used + per_patch * f64::from(grown.saturating_sub(chunk)) <= 0.9 * budget {
                grown
            } else {
                chunk
            }
        } else {
            chunk
        };
        t.align_chunk(target.min(self.max_chunk)).max(t.chunk_unit())
    }

    /// Under a memory budget, from the smallest workspaces: measures the workspaces' bytes per patch
    /// (one more chunk's worth built and measured) and takes the largest chunk, up to `natural`,
    /// expected to keep the trainer under 90% of the budget, so that not even the start goes over
    /// it. Warns when the smallest chunk does.
    fn fit_memory_budget(&mut self, natural: u32) -> Result<()> {
        let budget_mb = self.config.train.memory_budget_mb;
        if budget_mb == 0 {
            return Ok(());
        }
        let budget = (u64::from(budget_mb) << 20) as f64;
        let smallest = self.chunk_patches;
        let small_bytes = (self.train.bytes + self.view.bytes) as f64;
        let probe = (2 * smallest).min(self.max_chunk);
        let mut chunk = smallest;
        if probe > smallest && self.gpu.allocated_bytes() as f64 + small_bytes <= 0.9 * budget {
            self.set_chunk(probe)?;
            let per_patch = ((self.train.bytes + self.view.bytes) as f64 - small_bytes) / f64::from(probe - smallest);
            let others = self.gpu.allocated_bytes() as f64 - (self.train.bytes + self.view.bytes) as f64;
            let base = small_bytes - per_patch * f64::from(smallest);
            let fits = ((0.9 * budget - others - base) / per_patch.max(1.0)).floor().max(0.0) as u32;
            chunk = self.config.train.align_chunk(fits.min(natural)).max(smallest);
        }
        if chunk != self.chunk_patches {
            self.set_chunk(chunk)?;
        }
        self.warn_over_budget();
        Ok(())
    }

    /// Warns when even the smallest chunk leaves the trainer over its memory budget.
    fn warn_over_budget(&self) {
        let budget = u64::from(self.config.train.memory_budget_mb) << 20;
        if budget > 0 && self.gpu.allocated_bytes() > budget {
            log::warn!(
                "the trainer needs {} MiB of device memory with {} patch(es) at a time, more than \
                 train.memory_budget_mb = {}: the model alone takes {} MiB",
                self.gpu.allocated_bytes() >> 20,
                self.chunk_patches,
                self.config.train.memory_budget_mb,
                self.gpu.allocated_bytes().saturating_sub(self.train.bytes + self.view.bytes) >> 20
            );
        }
    }

    /// Rebuilds the workspaces for chunks of `chunk_patches`: the old ones are freed first, so the
    /// device never holds both (the cameras go through the host).
    fn set_chunk(&mut self, chunk_patches: u32) -> Result<()> {
        self.gpu.wait()?;
        let cameras = self.train.size.cameras;
        let camera_records: Vec<GpuCamera> = self.gpu.read(&self.train.cameras, cameras as usize)?;
        self.train.release(&self.gpu);
        self.view.release(&self.gpu);
        (self.train, self.view) = Self::workspaces(
            &self.gpu,
            &self.kernels,
            &self.model,
            &self.config,
            cameras,
            chunk_patches,
            PatchNets { lpips: self.lpips_weights.as_ref(), discriminator: self.discriminator.as_ref() },
        )?;
        self.gpu.write(&self.train.cameras, &camera_records);
        self.chunk_patches = chunk_patches;
        Ok(())
    }

    pub fn n_params(&self) -> u64 {
        self.model.n_params()
    }

    /// Rays per training step.
    pub fn rays_per_step(&self) -> u32 {
        let t = &self.config.train;
        t.patches_per_step() * t.patch_size * t.patch_size
    }

    /// Learning-rate multiplier at `step`: exponential decay from lr_decay_start over lr_decay_steps
    /// down to lr_final_ratio (never compounding), floored at 0.01.
    pub fn lr_factor(&self, step: u32) -> f32 {
        self.config.train.lr_factor(step, &self.lr_state)
    }

    /// Adam's uniforms at `step`.
    pub fn adam_uniforms(&self, step: u32) -> AdamUniforms {
        let t = &self.config.train;
        let k = f64::from(step + 1);
        let lr = self.lr_factor(step);
        AdamUniforms {
            lr_hash: t.lr_hash * lr,
            lr_mlp: t.lr_mlp * lr,
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_eps,
            bias1: (1.0 - f64::from(t.adam_beta1).powf(k)) as f32,
            bias2: (1.0 - f64::from(t.adam_beta2).powf(k)) as f32,
            // d/dp of weight * mean(p^2) over the model
            l2: 2.0 * self.term_weight("param", step) / self.n_params().max(1) as f32,
        }
    }

    /// The sampling uniforms at `step` (`training`: exploration of empty cells on).
    pub fn sampling_uniforms(&self, step: u32, training: bool) -> Sampling {
        let t = &self.config.train;
        Sampling {
            resolution: t.occupancy_resolution.max(1),
            threshold: t.occupancy_threshold,
            skip: u32::from(t.skips_at(step)),
            explore: if training { t.occupancy_explore } else { 0.0 },
            decay: t.occupancy_decay,
            phase: self.occupancy_phase(step),
            seed: step_seed(t.seed, step),
            proposal_floor: t.proposal_floor,
        }
    }

    /// The batch uniforms of a training chunk of `rays` rays at `cuts`.
    pub fn training_batch(&self, step: u32, chunk: u32, rays: u32, cuts: &[u32]) -> Batch {
        let t = &self.config.train;
        let mut cut_array = [0u32; MAX_CUTS];
        cut_array[..cuts.len()].copy_from_slice(cuts);
        Batch {
            n_rays: rays,
            samples_per_ray: t.samples_per_ray_at(step),
            n_cuts: cuts.len() as u32,
            seed: step_seed(t.seed, step),
            training: 1,
            patch_size: t.patch_size,
            // random streams follow the ray's index in the whole step, so chunking changes nothing
            ray_offset: chunk * self.chunk_patches * t.patch_size * t.patch_size,
            view: 0,
            cuts: cut_array,
            background: self.config.data.background,
            random_background: u32::from(self.config.data.random_background),
            group_tiles: t.group_tiles(),
            // the chunk's share of the structure patches' tiles (they come first in a step)
            grouped_patches: self.grouped_patches().saturating_sub(chunk * self.chunk_patches).min(self.chunk_patches),
            probe_groups: self.probe_groups_at(&self.train, step),
            probe_kinds: self.probe_kinds(step),
        }
    }

    /// The proposal's batch uniforms of a training chunk (the hierarchical and importance phases):
    /// the chunk's rays, `proposal_samples` stratified samples each at the cut `proposal_cut`, no
    /// probes.
    pub fn proposal_batch(&self, batch: &Batch) -> Batch {
        let t = &self.config.train;
        let mut cuts = [0u32; MAX_CUTS];
        cuts[0] = t.proposal_cut.min(self.octree.max_depth());
        Batch { samples_per_ray: t.proposal_samples, n_cuts: 1, cuts, probe_groups: 0, probe_kinds: 0, ..*batch }
    }

    /// Whether the training batches of step `step` resample from a proposal.
    pub fn resamples_at(&self, step: u32) -> bool {
        self.train.proposal.is_some() && self.config.train.resamples_at(step)
    }

    /// Which kinds of probes step `step` makes (`Batch::probe_kinds`): bit 0 the stencils (normal
    /// and density consistency), bit 1 the seams; a kind whose terms weigh 0 costs nothing.
    pub fn probe_kinds(&self, step: u32) -> u32 {
        let on = |name: &str| self.term_weight(name, step) > 0.0;
        u32::from(on("normal_consistency") || on("density_consistency")) | u32::from(on("seam")) << 1
    }

    /// The probe groups of a chunk of step `step` in `ws` (0 while no term on probes weighs more
    /// than 0, and always in the view workspace).
    pub fn probe_groups_at(&self, ws: &Workspace, step: u32) -> u32 {
        if self.probe_kinds(step) == 0 {
            0
        } else {
            ws.size.probe_groups
        }
    }

    /// Patches of a step that are tiles of structure patches (the first ones).
    pub fn grouped_patches(&self) -> u32 {
        let t = &self.config.train;
        t.accumulate_steps * t.structure_patches * t.group_tiles() * t.group_tiles()
    }

    /// Level weights w_k = 2^(-gamma k) / sum over the rendered cuts (SPEC §3.1).
    pub fn level_weights(&self, cuts: &[u32]) -> Vec<f32> {
        let gamma = f64::from(self.config.loss.level_gamma);
        let raw: Vec<f64> = cuts.iter().map(|&k| (-gamma * f64::from(k)).exp2()).collect();
        let sum: f64 = raw.iter().sum();
        raw.iter().map(|w| (w / sum) as f32).collect()
    }

    /// Cut slots a step that renders its coarser cuts fills: the finest and `loss.coarse_cuts` more,
    /// as many as the tree has.
    pub fn cut_slots(&self) -> usize {
        1 + self.config.loss.coarse_cuts.min(self.octree.max_depth()) as usize
    }

    /// The cuts step `self.step` renders: the finest, then `loss.coarse_cuts` distinct coarser ones at
    /// random (on every `loss.coarse_every`-th step; the others render the finest alone).
    pub fn draw_cuts(&mut self) -> Vec<u32> {
        let finest = self.octree.max_depth();
        let mut cuts = vec![finest];
        if !self.step.is_multiple_of(self.config.loss.coarse_every.max(1)) {
            return cuts;
        }
        let coarser = finest.min(self.config.loss.coarse_cuts);
        while (cuts.len() as u32) < 1 + coarser {
            let k = self.rng.below(finest);
            if !cuts.contains(&k) {
                cuts.push(k);
            }
        }
        cuts
    }

    /// Draws the step's patches: first the structure patches (each as its tiles, row by row), then the
    /// lone patches; each at full resolution, or at a coarser pyramid level for `coarse_fraction` of
    /// them. Returns them and the rays on their images.
    pub fn draw_patches(&mut self) -> (Vec<Patch>, u32) {
        let t = self.config.train.clone();
        let (p, m) = (t.patch_size, t.group_tiles());
        let mut valid = 0;
        let mut patches = Vec::with_capacity(t.patches_per_step() as usize);
        let k = t.accumulate_steps;
        for (count, size) in [(k * t.structure_patches, t.structure_patch_size), (k * t.patches_per_batch, p)] {
            for _ in 0..count {
                let view = self.rng.below(self.images.len() as u32);
                let coarse = self.pyramid_levels > 1 && self.rng.next_f32() < self.config.data.coarse_fraction;
                let level = if coarse { 1 + self.rng.below(self.pyramid_levels - 1) } else { 0 };
                let image = &self.images[view as usize][level as usize];
                let x0 = self.rng.below(image.width.saturating_sub(size) + 1);
                let y0 = self.rng.below(image.height.saturating_sub(size) + 1);
                valid += size.min(image.width - x0) * size.min(image.height - y0);
                let tiles = if size == p { 1 } else { m };
                for ty in 0..tiles {
                    for tx in 0..tiles {
                        patches.push(Patch { view, level, x0: x0 + tx * p, y0: y0 + ty * p });
                    }
                }
            }
        }
        (patches, valid)
    }

    /// The squares of pixels of `patches` (a step's, structure patches first): (first patch, tiles
    /// per side) each.
    pub fn squares(&self, patches: &[Patch]) -> Vec<(usize, u32)> {
        let grouped = (self.grouped_patches() as usize).min(patches.len());
        let tiles = self.config.train.group_tiles();
        let groups = (0..grouped).step_by((tiles * tiles) as usize).map(|first| (first, tiles));
        groups.chain((grouped..patches.len()).map(|first| (first, 1))).collect()
    }

    /// The next step's patches and cuts (advances the host RNG).
    pub fn plan_step(&mut self) -> StepPlan {
        let (patches, valid_rays) = self.draw_patches();
        let cuts = self.draw_cuts();
        let cut_weights = self.level_weights(&cuts);
        StepPlan { patches, valid_rays, cuts, cut_weights }
    }

    /// The patches' pixels, RGBA8, ray by ray (0 off the image).
    pub fn gather_targets(&self, patches: &[Patch]) -> Vec<u32> {
        let p = self.config.train.patch_size;
        let mut targets = Vec::with_capacity(patches.len() * (p * p) as usize);
        for patch in patches {
            let image = &self.images[patch.view as usize][patch.level as usize];
            for j in 0..p {
                for i in 0..p {
                    let (x, y) = (patch.x0 + i, patch.y0 + j);
                    let inside = x < image.width && y < image.height;
                    targets.push(if inside { image.pixels[(y * image.width + x) as usize] } else { 0 });
                }
            }
        }
        targets
    }

    /// Writes chunk `chunk` of `plan` into the training workspace (its patches, targets, uniforms).
    /// Returns the chunk's ray count.
    pub fn upload_chunk(&self, step: u32, plan: &StepPlan, chunk: u32) -> u32 {
        let first = (chunk * self.chunk_patches) as usize;
        let patches = &plan.patches[first..(first + self.chunk_patches as usize).min(plan.patches.len())];
        let rays = patches.len() as u32 * self.config.train.patch_size * self.config.train.patch_size;
        let ws = &self.train;
        self.gpu.write(&ws.patches, patches);
        self.gpu.write(&ws.targets, &self.gather_targets(patches));
        let batch = self.training_batch(step, chunk, rays, &plan.cuts);
        self.gpu.write(&ws.batch, &[batch]);
        if let Some(proposal) = ws.proposal.as_ref().filter(|_| self.resamples_at(step)) {
            self.gpu.write(&proposal.batch, &[self.proposal_batch(&batch)]);
        }
        self.gpu.write(&ws.sampling, &[self.sampling_uniforms(step, true)]);
        self.gpu.write(&ws.loss, &[self.loss_uniforms(step, plan)]);
        let squares = batch.grouped_patches / (batch.group_tiles * batch.group_tiles);
        if let Some(lpips) = &ws.lpips {
            lpips.upload(&self.gpu, squares, plan.cuts.len() as u32);
        }
        if let (Some(adversarial), Some(disc)) = (&ws.adversarial, &self.discriminator) {
            adversarial.upload(&self.gpu, squares, plan.cuts.len() as u32);
            if squares > 0 && self.term_weight("adversarial", step) > 0.0 {
                // one discriminator update per chunk with structure patches
                self.gpu.write(&disc.settings, &[disc.next_update(self.config.loss.discriminator_lr)]);
                disc.updates.set(disc.updates.get() + 1);
            }
        }
        rays
    }

    /// The weight of loss term `name` at `step`: its lambda x its group's schedule multiplier x its
    /// balancer factor (SPEC §3.6, §3.7; `loss_weights::term_weight`).
    pub fn term_weight(&self, name: &str, step: u32) -> f32 {
        if name == "lpips" && self.train.lpips.is_none() {
            return 0.0;
        }
        let lambda = f64::from(self.config.lambda(name));
        loss_weights::term_weight(name, lambda, step, &self.config.schedule, &self.balancer) as f32
    }

    /// The loss passes' uniforms of step `step` for `plan`: every term's weight, the cuts' level
    /// weights.
    pub fn loss_uniforms(&self, step: u32, plan: &StepPlan) -> LossUniforms {
        let mut cut_weights = [0.0f32; MAX_CUTS];
        cut_weights[..plan.cut_weights.len()].copy_from_slice(&plan.cut_weights);
        let mut lambdas = [[0.0f32; 4]; 4];
        for (t, name) in LOSS_NAMES.iter().enumerate() {
            lambdas[t / 4][t % 4] = self.term_weight(name, step);
        }
        let t = &self.config.train;
        let rays = plan.patches.len() as f32 * (t.patch_size * t.patch_size) as f32;
        // adjacent pairs per direction: size (size - 1) per square
        let pairs: u32 =
            self.squares(&plan.patches).iter().map(|&(_, m)| m * t.patch_size * (m * t.patch_size - 1)).sum();
        let pairs = pairs as f32;
        LossUniforms {
            inv_count: 1.0 / (3.0 * plan.valid_rays.max(1) as f32),
            inv_samples: 1.0 / (rays * t.samples_per_ray_at(step) as f32).max(1.0),
            inv_pairs: 1.0 / (3.0 * pairs.max(1.0)),
            inv_rays: 1.0 / plan.valid_rays.max(1) as f32,
            cut_weights,
            finer_cut: finer_cuts(&plan.cuts),
            inv_windows: 1.0 / (3.0 * self.ssim_windows(&plan.patches).max(1) as f32),
            ssim_window: self.config.loss.ssim_window,
            huber_delta: self.config.loss.huber_delta,
            fault: self.fault.map_or(1.0, |f| f.loss_factor(step)),
            lambdas,
            inv_probes: 1.0 / (self.train.size.probe_groups * self.chunks()).max(1) as f32,
            inv_squares: 1.0 / (t.accumulate_steps * t.structure_patches).max(1) as f32,
            ..Default::default()
        }
    }

    /// SSIM windows wholly inside a square (patch or structure patch) and on its image, over `patches`.
    pub fn ssim_windows(&self, patches: &[Patch]) -> u64 {
        let (p, w) = (self.config.train.patch_size, self.config.loss.ssim_window);
        self.squares(patches)
            .iter()
            .map(|&(first, tiles)| {
                let patch = &patches[first];
                let image = &self.images[patch.view as usize][patch.level as usize];
                let size = tiles * p;
                let across = |extent: u32, start: u32| (extent.saturating_sub(start).min(size) + 1).saturating_sub(w);
                u64::from(across(image.width, patch.x0)) * u64::from(across(image.height, patch.y0))
            })
            .sum()
    }

    /// Chunks of a step's patches.
    pub fn chunks(&self) -> u32 {
        self.config.train.patches_per_step().div_ceil(self.chunk_patches)
    }

    /// One training step, submitted; waits only when `MAX_IN_FLIGHT` steps are already queued.
    pub fn step(&mut self) -> Result<()> {
        let plan = self.plan_step();
        self.run_step(&plan, None)?;
        Ok(())
    }

    /// One step with each pass submitted alone and waited for: milliseconds per pass (for `bench`).
    pub fn profile_step(&mut self) -> Result<Vec<(&'static str, f64)>> {
        self.wait_all()?;
        let plan = self.plan_step();
        let mut times = Vec::new();
        self.run_step(&plan, Some(&mut times))?;
        Ok(times)
    }

    /// Runs `plan` as step `self.step`: every chunk forward, losses, backward; then Adam.
    pub fn run_step(&mut self, plan: &StepPlan, mut profile: Option<&mut Vec<(&'static str, f64)>>) -> Result<()> {
        let step = self.step;
        self.gpu.write(&self.model.adam, &[self.adam_uniforms(step)]);
        self.gpu.write(&self.model.guard_settings, &[self.guard_uniforms()]);
        if std::mem::take(&mut self.guard_reset) || self.weights_jump(step) {
            self.reset_guard_history();
        }
        if self.fault.is_some_and(|f| f.nan_grad(step)) {
            self.poison_gradients();
        }
        let chunks = self.chunks();
        let mut dispatches = 0;
        // the level weights logged beside the per-cut values: those of the last step that rendered
        // every cut slot (the steps between two loss.coarse_every render the finest alone, weight 1)
        if plan.cuts.len() == self.cut_slots() || self.last_cut_weights.is_empty() {
            self.last_cut_weights.clone_from(&plan.cut_weights);
        }
        for chunk in 0..chunks {
            let rays = self.upload_chunk(step, plan, chunk);
            let mut rec = match profile {
                Some(_) => Recorder::profiling(&self.gpu, "train step"),
                None => Recorder::new(&self.gpu, "train step"),
            };
            if chunk == 0 && self.occupancy_due(step) {
                self.gpu.write(&self.model.sampling, &[self.sampling_uniforms(step, true)]);
                self.record_occupancy(&mut rec, self.occupancy_phase(step));
            }
            let ws = &self.train;
            self.record_forward(&mut rec, ws, rays, plan.cuts.len() as u32);
            self.record_losses(&mut rec, ws, rays * plan.cuts.len() as u32);
            self.record_backward(&mut rec, ws, rays * plan.cuts.len() as u32);
            rec.dispatch_groups(&self.kernels.loss_stats, &ws.groups.loss_stats, 1, 1);
            if chunk + 1 == chunks {
                self.record_guard(&mut rec, ws);
                self.record_adam(&mut rec, ws);
            }
            dispatches += rec.dispatches;
            let (index, times) = rec.submit();
            if let (Some(out), Some(times)) = (profile.as_deref_mut(), times) {
                for (name, ms) in times {
                    match out.iter_mut().find(|(n, _)| *n == name) {
                        Some(entry) => entry.1 += ms,
                        None => out.push((name, ms)),
                    }
                }
            }
            self.in_flight.push_back(index);
        }
        self.last_dispatches = dispatches;
        self.step += 1;
        while self.in_flight.len() > MAX_IN_FLIGHT {
            let index = self.in_flight.pop_front().expect("non-empty");
            self.gpu.wait_for(index)?;
        }
        Ok(())
    }

    /// Terms that cannot run here (their weight is held at 0), and why: LPIPS without its weights.
    pub fn unavailable_terms(&self) -> BTreeMap<String, String> {
        self.lpips_unavailable.iter().map(|reason| ("lpips".to_string(), reason.clone())).collect()
    }

    /// Waits for every queued step.
    pub fn wait_all(&mut self) -> Result<()> {
        self.in_flight.clear();
        self.gpu.wait()
    }

    /// rays -> samples -> node_scan -> scatter -> field_forward (per page) -> render_forward, for a
    /// batch of `rays` rays at `cuts` cuts in `ws` (its uniforms, patches and cameras written).
    /// While the step resamples, the samples come from the proposal (`record_proposal`).
    pub fn record_forward(&self, rec: &mut Recorder, ws: &Workspace, rays: u32, cuts: u32) {
        let k = &self.kernels;
        let g = &ws.groups;
        rec.dispatch(&k.rays, &g.rays, rays);
        match ws.proposal.as_ref().filter(|_| self.resamples_at(self.step)) {
            Some(proposal) => {
                self.record_proposal(rec, ws, proposal, rays);
                let samples = rays * cuts * self.config.train.resample_samples;
                self.record_samples(rec, ws, &k.resample, &proposal.resample, samples);
            }
            None => {
                let samples = rays * cuts * self.config.train.samples_per_ray;
                self.record_samples(rec, ws, &k.samples, &g.samples, samples);
            }
        }
        self.record_field_forward(rec, ws);
        rec.dispatch(&k.render_forward, &g.render_forward, rays * cuts);
    }

    /// field_forward over the workspace's node-sorted samples, page by page.
    pub fn record_field_forward(&self, rec: &mut Recorder, ws: &Workspace) {
        for (page, group) in ws.groups.field_forward.iter().enumerate() {
            rec.dispatch_indirect(&self.kernels.field_forward, group, &ws.dispatch_args, page as u64 * 12);
        }
    }

    /// The proposal of the hierarchical and importance phases (SPEC §5): its stratified samples at
    /// one coarse cut, their node-sorted list, the field forward on them, and each ray's CDF.
    pub fn record_proposal(&self, rec: &mut Recorder, ws: &Workspace, proposal: &Proposal, rays: u32) {
        let k = &self.kernels;
        rec.clear(&ws.node_counts);
        rec.dispatch(&k.samples, &proposal.samples, rays * self.config.train.proposal_samples);
        rec.dispatch_groups(&k.node_scan, &ws.groups.node_scan, 1, 1);
        rec.dispatch(&k.scatter, &proposal.scatter, rays * self.config.train.proposal_samples);
        self.record_field_forward(rec, ws);
        rec.dispatch(&k.proposal_cdf, &proposal.cdf_group, rays);
    }

    /// `make` on `group` (the samples pass, or resample) (-> probes) -> node_scan -> scatter: the
    /// samples and the node-sorted list of active ones.
    pub fn record_samples(
        &self,
        rec: &mut Recorder,
        ws: &Workspace,
        make: &Compiled,
        group: &wgpu::BindGroup,
        samples: u32,
    ) {
        let k = &self.kernels;
        let probes = self.probe_groups_at(ws, self.step);
        rec.clear(&ws.node_counts);
        rec.dispatch(make, group, samples);
        if probes > 0 {
            rec.dispatch(&k.probes, &ws.groups.probes, probes);
        }
        rec.dispatch_groups(&k.node_scan, &ws.groups.node_scan, 1, 1);
        rec.dispatch(&k.scatter, &ws.groups.scatter, samples + probes * PROBES_PER_GROUP);
    }

    /// The loss passes: each adds its dLoss/d(output) to the slots' gradients.
    /// A term whose weight is 0 at this step (lambda, schedule or balancer) costs nothing: its pass
    /// is not run and its statistics read 0.
    pub fn record_losses(&self, rec: &mut Recorder, ws: &Workspace, slots: u32) {
        let (k, g) = (&self.kernels, &ws.groups);
        rec.clear(&ws.ray_grads);
        rec.clear(&ws.losses);
        // always: it is also the training metric (psnr_train)
        rec.dispatch(&k.loss_mse, &g.loss_mse, slots);
        if self.term_weight("tv", self.step) > 0.0 || self.term_weight("tv_depth", self.step) > 0.0 {
            rec.dispatch(&k.loss_tv, &g.loss_tv, slots);
        }
        if self.term_weight("ssim", self.step) > 0.0 {
            rec.dispatch(&k.loss_ssim, &g.loss_ssim, slots);
        }
        if self.term_weight("depth_consistency", self.step) > 0.0 {
            rec.dispatch(&k.loss_depth_consistency, &g.loss_depth_consistency, slots);
        }
        if let Some(lpips) = ws.lpips.as_ref().filter(|_| self.term_weight("lpips", self.step) > 0.0) {
            lpips.record(rec, k, slots);
        }
        if let (Some(adversarial), Some(disc)) = (&ws.adversarial, &self.discriminator) {
            if self.term_weight("adversarial", self.step) > 0.0 {
                adversarial.record(rec, k, disc, slots);
            }
        }
        let probes = self.probe_groups_at(ws, self.step);
        if probes > 0 {
            rec.dispatch(&k.loss_probes, &g.loss_probes, probes);
        }
    }

    /// render_backward -> the losses on samples -> field_backward (per page): gradients summed into
    /// the model's.
    pub fn record_backward(&self, rec: &mut Recorder, ws: &Workspace, slots: u32) {
        let k = &self.kernels;
        rec.dispatch(&k.render_backward, &ws.groups.render_backward, slots);
        if self.term_weight("sparsity", self.step) > 0.0 {
            rec.dispatch(&k.loss_sparsity, &ws.groups.loss_sparsity, slots);
        }
        for (page, group) in ws.groups.field_backward.iter().enumerate() {
            rec.dispatch_indirect(&k.field_backward, group, &ws.dispatch_args, page as u64 * 12);
        }
    }

    /// The guard's settings (`stability`).
    pub fn guard_uniforms(&self) -> GuardUniforms {
        let s = &self.config.stability;
        GuardUniforms {
            clip: s.clip_grad_norm,
            sigma: s.anomaly_sigma,
            window: s.anomaly_window,
            min_ratio: s.anomaly_min_ratio,
            growth_steps: self.config.train.loss_scale_growth_steps,
        }
    }

    /// Whether a term's weight changes by more than 10 % from step - 1 to `step` (a schedule
    /// boundary): the loss and the gradient's norm then change level, and the detector's history
    /// must start again rather than flag the new level.
    pub fn weights_jump(&self, step: u32) -> bool {
        step > 0
            && LOSS_NAMES.iter().any(|name| {
                let (before, now) = (self.term_weight(name, step - 1), self.term_weight(name, step));
                (now - before).abs() > 0.1 * before.abs().max(now.abs())
            })
    }

    /// `--inject-fault nan-grad`: NaN into the gradient of every node's first decoder weight (the
    /// backward adds to it; the guard and Adam see a non-finite gradient).
    pub fn poison_gradients(&self) {
        let paging = &self.model.paging;
        for node in 0..paging.n_nodes {
            let page = paging.page_of(node);
            let first = paging.nodes(page).start;
            let index = u64::from(node - first) * u64::from(paging.node_params) + u64::from(self.layout.hash_params);
            self.gpu.write_at(&self.model.grads[page as usize], index, &[f32::NAN]);
        }
    }

    /// Restarts the anomaly detector's history (in queue order: the next step sees it empty).
    pub fn reset_guard_history(&self) {
        let words = stability::HISTORY_STATE;
        let zeros = vec![0.0f32; words.clone().count()];
        self.gpu.write_at(&self.model.guard, u64::from(*words.start()), &zeros);
    }

    /// The statistics of the step's gradient (per page) and the guard's decision, before Adam.
    pub fn record_guard(&self, rec: &mut Recorder, ws: &Workspace) {
        if self.shape.flag_blocks {
            for (page, group) in self.model.grad_norm_block_groups.iter().enumerate() {
                let threads = self.model.paging.blocks(page as u32) as u32;
                rec.dispatch(&self.kernels.grad_norm_blocks, group, threads);
            }
        } else {
            for (page, group) in ws.groups.grad_norm.iter().enumerate() {
                rec.dispatch_indirect(&self.kernels.grad_norm, group, &ws.dispatch_args, page as u64 * 12);
            }
        }
        rec.dispatch_groups(&self.kernels.grad_guard, &self.model.grad_guard_group, 1, 1);
    }

    /// Adam over the parameters with gradients: node by node over `ws`'s samples, or over the
    /// flagged blocks when a step runs in chunks. Clears the gradients.
    pub fn record_adam(&self, rec: &mut Recorder, ws: &Workspace) {
        if self.shape.flag_blocks {
            self.record_adam_blocks(rec);
        } else {
            for (page, group) in ws.groups.adam_nodes.iter().enumerate() {
                rec.dispatch_indirect(&self.kernels.adam_nodes, group, &ws.dispatch_args, page as u64 * 12);
            }
        }
    }

    /// Adam over the blocks flagged in `model.touched`, every page.
    pub fn record_adam_blocks(&self, rec: &mut Recorder) {
        for (page, group) in self.model.adam_block_groups.iter().enumerate() {
            let threads = self.model.paging.blocks(page as u32) as u32;
            rec.dispatch(&self.kernels.adam_blocks, group, threads);
        }
    }

    /// Whether the occupancy grid is refreshed before step `step`.
    /// Every step during the warm-up (while no sample is skipped, a step costs far more than an
    /// update), then every `occupancy_update_every` steps.
    pub fn occupancy_due(&self, step: u32) -> bool {
        let t = &self.config.train;
        t.occupancy_resolution > 0 && (step < t.occupancy_warmup || step.is_multiple_of(t.occupancy_update_every))
    }

    /// Cells of the occupancy grid.
    pub fn occupancy_cells(&self) -> u32 {
        self.config.train.occupancy_resolution.max(1).pow(3)
    }

    /// Which subset of the occupancy cells the update at `step` visits.
    pub fn occupancy_phase(&self, step: u32) -> u32 {
        let t = &self.config.train;
        if step < t.occupancy_warmup {
            step % OCC_PHASES
        } else {
            (step / t.occupancy_update_every.max(1)) % OCC_PHASES
        }
    }

    /// Updates the cells of `phase` (the model's sampling uniforms must say `phase`), one dispatch
    /// per page, then the grid's mean.
    pub fn record_occupancy(&self, rec: &mut Recorder, phase: u32) {
        let pages = self.model.paging.n_pages;
        for (page, group) in self.model.occupancy_groups.iter().enumerate() {
            let groups = self.model.occ_group_counts[(phase * pages) as usize + page];
            if groups > 0 {
                let (x, y) = crate::gpu::dispatch_size(groups, 1);
                rec.dispatch_groups(&self.kernels.occupancy, group, x, y);
            }
        }
        rec.dispatch_groups(&self.kernels.occupancy_mean, &self.model.occupancy_mean_group, 1, 1);
    }

    /// Reads and clears the loss statistics (a small read-back: call every few steps). `steps` is
    /// how many steps they cover.
    pub fn read_stats(&mut self) -> Result<LossStats> {
        self.in_flight.clear();
        let stats: Vec<f32> = self.gpu.read(&self.model.stats, STATS_WORDS)?;
        let sanitized: Vec<u32> = self.gpu.read(&self.model.sanitized, SANITIZED_SLOTS.len())?;
        let counters: Vec<u32> = self.gpu.read(&self.model.counters, 1)?;
        self.gpu.write(&self.model.counters, &[0u32]);
        let guard_words: Vec<f32> = self.gpu.read(&self.model.guard, guard::WORDS as usize)?;
        let since = stability::SINCE_READ;
        self.gpu.write_at(&self.model.guard, u64::from(*since.start()), &vec![0.0f32; since.clone().count()]);
        self.gpu.write(&self.model.stats, &[0.0f32; STATS_WORDS]);
        self.gpu.write(&self.model.sanitized, &[0u32; SANITIZED_SLOTS.len()]);
        let chunks = f64::from(self.chunks());
        let steps = (f64::from(stats[0]) / chunks).round() as u32;
        let per_step = f64::from(steps.max(1));
        let cuts = self.cut_slots();
        // a cut's sums are over the steps that rendered it (the coarser ones: loss.coarse_every)
        let steps_of = |c: usize| (f64::from(stats[STATS_CUT_BATCHES + c]) / chunks).round().max(1.0);
        let mut terms: Vec<(&'static str, Vec<f64>)> = (0..LOSS_TERMS)
            .map(|t| {
                let per_cut = (0..cuts).map(|c| f64::from(stats[3 + t * MAX_CUTS + c]) / steps_of(c)).collect();
                (LOSS_NAMES[t], per_cut)
            })
            .collect();
        // the parameter L2 is measured now, not summed over the steps (param_norm)
        let param_weight = self.term_weight("param", self.step.saturating_sub(1));
        let mut total = f64::from(stats[2]) / per_step;
        if param_weight > 0.0 {
            let value = self.param_l2()?;
            terms[TERM_PARAM].1[0] = value;
            total += f64::from(param_weight) * value;
        }
        // the balancer learns from every term that is computed (raw values: its weight is scale-free)
        self.balancer.set_window(self.config.schedule.balancer_window as usize);
        for (t, (name, per_cut)) in terms.iter().enumerate() {
            if steps > 0 && self.term_weight(name, self.step.saturating_sub(1)) > 0.0 {
                // a per-cut term's value at the finest cut; a consistency term's over its pairs
                let value = if LOSS_PER_CUT[t] { per_cut[0] } else { per_cut.iter().sum() };
                self.balancer.record(LOSS_NAMES[t], value);
            }
        }
        let guard = GuardReport::from_words(&guard_words);
        let events = if steps > 0 { self.look_after_stability(total, &guard)? } else { Vec::new() };
        let chunk = self.memory_budget_chunk(true);
        if chunk != self.chunk_patches {
            log::info!(
                "step {}: {} MiB of the {} MiB budget in use: {} patches at a time instead of {}",
                self.step,
                self.gpu.allocated_bytes() >> 20,
                self.config.train.memory_budget_mb,
                chunk,
                self.chunk_patches
            );
            self.set_chunk(chunk)?;
        }
        Ok(LossStats {
            guard,
            events,
            steps,
            total,
            mse: terms[0].1[0],
            active_samples: (f64::from(stats[1]) + f64::from(counters[0])) / per_step,
            proposal_samples: f64::from(counters[0]) / per_step,
            sanitized: SANITIZED_SLOTS.iter().copied().zip(sanitized).collect(),
            term_weights: LOSS_NAMES.iter().map(|&n| (n, f64::from(self.term_weight(n, self.step)))).collect(),
            schedule: loss_weights::schedule_weights(self.step, &self.config.schedule),
            balancer: self.balancer.weights(),
            level_weights: self.last_cut_weights.clone(),
            unavailable: self.unavailable_terms(),
            terms,
        })
    }

    /// At a statistics read (the device idle): the plateau rule; after `restore_after` anomalies in
    /// a row, the last snapshot restored and the learning rate cut; without anomalies, a new snapshot
    /// when one is due.
    fn look_after_stability(&mut self, loss: f64, report: &GuardReport) -> Result<Vec<StabilityEvent>> {
        let step = self.step;
        let mut events = Vec::new();
        let before = self.lr_state.plateau_reductions;
        if report.anomalies() == 0 {
            self.config.train.lr_plateau_update(&mut self.lr_state, step, loss);
        }
        if self.lr_state.plateau_reductions > before {
            events.push(StabilityEvent::Plateau { step, reductions: self.lr_state.plateau_reductions });
        }
        let st = self.config.stability.clone();
        if st.restore_after > 0 && report.max_run >= st.restore_after {
            if let Some(snapshot) = &self.snapshot {
                let paging = &self.model.paging;
                self.model.write_params(&self.gpu, &self.kernels, &snapshot.params)?;
                Model::write_paged(&self.gpu, &self.model.m1, paging, &snapshot.m1)?;
                Model::write_paged(&self.gpu, &self.model.m2, paging, &snapshot.m2)?;
                self.lr_state.restore_factor *= st.restore_lr_factor;
                self.reset_guard_history();
                events.push(StabilityEvent::Restore {
                    step,
                    from_step: snapshot.step,
                    anomalies_in_a_row: report.max_run,
                    lr_restore_factor: self.lr_state.restore_factor,
                });
            }
        } else if report.anomalies() == 0
            && loss.is_finite()
            && st.snapshot_every > 0
            && self.snapshot_fits()
            && self.snapshot.as_ref().is_none_or(|s| step >= s.step + st.snapshot_every)
        {
            let paging = &self.model.paging;
            self.snapshot = Some(Snapshot {
                step,
                params: Model::read_paged(&self.gpu, &self.model.params, paging)?,
                m1: Model::read_paged(&self.gpu, &self.model.m1, paging)?,
                m2: Model::read_paged(&self.gpu, &self.model.m2, paging)?,
            });
        }
        Ok(events)
    }

    /// Whether a snapshot (parameters and both moments) fits `stability.snapshot_max_mib`.
    pub fn snapshot_fits(&self) -> bool {
        self.n_params() * 12 <= u64::from(self.config.stability.snapshot_max_mib) << 20
    }

    /// The parameter L2's value: the mean of p^2 over the model (param_norm, then the partials summed
    /// here).
    pub fn param_l2(&self) -> Result<f64> {
        let mut rec = Recorder::new(&self.gpu, "parameter L2");
        for group in &self.model.param_norm_groups {
            rec.dispatch_groups(&self.kernels.param_norm, group, NORM_PARTIALS, 1);
        }
        rec.submit();
        let partials: Vec<f32> =
            self.gpu.read(&self.model.norm_partials, (self.model.paging.n_pages * NORM_PARTIALS) as usize)?;
        Ok(partials.iter().map(|&v| f64::from(v)).sum::<f64>() / self.n_params().max(1) as f64)
    }

    /// Starts rendering `camera` at tree cut `cut` (its own buffers; the training ones are untouched).
    pub fn render_job(&self, camera: &Camera, cut: u32) -> RenderJob {
        RenderJob {
            camera: *camera,
            cut,
            next: 0,
            outputs: Vec::with_capacity((camera.width * camera.height) as usize),
        }
    }

    /// Renders the next chunk of `job` (up to the view workspace's rays) and waits for it.
    pub fn render_chunk(&self, job: &mut RenderJob) -> Result<()> {
        let pixels = job.pixels();
        if job.done() {
            return Ok(());
        }
        let ws = &self.view;
        let n = (pixels - job.next).min(ws.size.rays);
        let t = &self.config.train;
        let mut cuts = [0u32; MAX_CUTS];
        cuts[0] = job.cut;
        let batch = Batch {
            n_rays: n,
            samples_per_ray: t.samples_per_ray,
            n_cuts: 1,
            seed: 0,
            training: 0,
            patch_size: 1,
            ray_offset: job.next,
            view: 0,
            cuts,
            background: self.config.data.background,
            random_background: 0,
            group_tiles: 1,
            grouped_patches: 0,
            probe_groups: 0,
            probe_kinds: 0,
        };
        self.gpu.write(&ws.batch, &[batch]);
        self.gpu.write(&ws.sampling, &[self.sampling_uniforms(self.step, false)]);
        self.gpu.write(&ws.cameras, &[GpuCamera::from(&job.camera)]);
        let mut rec = Recorder::new(&self.gpu, "render view");
        self.record_forward(&mut rec, ws, n, 1);
        rec.submit();
        job.outputs.extend(self.gpu.read::<RayOutput>(&ws.outputs, n as usize)?);
        job.next += n;
        Ok(())
    }

    /// Renders a whole view at tree cut `cut`.
    pub fn render(&self, camera: &Camera, cut: u32) -> Result<Rendered> {
        let mut job = self.render_job(camera, cut);
        while !job.done() {
            self.render_chunk(&mut job)?;
        }
        Ok(job.finish())
    }

    /// The number formats in use: mixed only where asked for and the adapter has SHADER_F16.
    pub fn precision(&self) -> Precision {
        if self.model.half {
            Precision::Mixed
        } else {
            Precision::F32
        }
    }

    /// Mixed precision: the loss scale and the steps in a row without an overflow (None in f32).
    pub fn loss_scale_state(&self) -> Result<Option<LossScaleState>> {
        if !self.model.half {
            return Ok(None);
        }
        let words: Vec<f32> = self.gpu.read(&self.model.guard, guard::WORDS as usize)?;
        Ok(Some(LossScaleState {
            scale: words[guard::LOSS_SCALE as usize],
            clean_steps: words[guard::CLEAN_STEPS as usize] as u32,
        }))
    }

    /// Sets the loss scale's state (a resumed run's); nothing in f32.
    pub fn set_loss_scale_state(&self, state: &LossScaleState) {
        if self.model.half {
            let words = [state.scale, state.clean_steps as f32];
            self.gpu.write_at(&self.model.guard, u64::from(guard::LOSS_SCALE), &words);
        }
    }

    pub fn read_params(&self) -> Result<Vec<f32>> {
        Model::read_paged(&self.gpu, &self.model.params, &self.model.paging)
    }

    pub fn write_params(&self, params: &[f32]) -> Result<()> {
        self.model.write_params(&self.gpu, &self.kernels, params)
    }
}

/// The dynamic loss scaling's state (mixed precision), as a checkpoint keeps it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaleState {
    pub scale: f32,
    pub clean_steps: u32,
}

/// Whether the trainer runs in mixed precision: asked for (`train.precision = "mixed"`) and the
/// adapter has SHADER_F16 (else it says so and trains in f32).
fn half_precision(gpu: &Gpu, config: &Config) -> bool {
    if config.train.precision != Precision::Mixed {
        return false;
    }
    let available = gpu.features.contains(wgpu::Features::SHADER_F16);
    if !available {
        log::warn!("train.precision = \"mixed\" needs SHADER_F16, which {} lacks: training in f32", gpu.info.name);
    }
    available
}

/// Decoder weights from workgroup memory on CPU adapters, read in place on GPUs (their caches
/// serve a workgroup-uniform address well, and the workgroup memory is left for the reductions).
/// `INFNERF_WEIGHTS=storage|workgroup` forces one (the tests check both paths on one adapter).
fn weight_source(gpu: &Gpu, layout: &FieldLayout) -> WeightSource {
    match std::env::var("INFNERF_WEIGHTS").as_deref() {
        Ok("storage") => return WeightSource::Storage,
        Ok("workgroup") => return WeightSource::Workgroup,
        _ => {}
    }
    let room = gpu.limits.max_compute_workgroup_storage_size;
    let cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
    if cpu && 4 * layout.mlp_params() * 2 <= room {
        WeightSource::Workgroup
    } else {
        WeightSource::Storage
    }
}

/// Per-step RNG seed for the kernels (the CPU reference derives the same).
pub fn step_seed(seed: u64, step: u32) -> u32 {
    let mut rng = SplitMix64(seed ^ (u64::from(step) << 32));
    rng.next_u64() as u32
}

fn pack_rgba8(rgb: &[f32], alpha: f32) -> u32 {
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u32;
    q(rgb[0]) | (q(rgb[1]) << 8) | (q(rgb[2]) << 16) | (q(alpha) << 24)
}

/// Probe groups per chunk of a step in chunks of `chunk_patches` patches: loss.probes spread over the
/// chunks, at most one per ray of the smallest chunk (a group's values are kept at a ray's slot).
pub fn probe_groups(config: &Config, chunk_patches: u32) -> u32 {
    let t = &config.train;
    let patches = t.patches_per_step();
    let chunk_patches = chunk_patches.clamp(1, patches.max(1));
    let chunks = patches.div_ceil(chunk_patches).max(1);
    let last = patches - (chunks - 1) * chunk_patches;
    config.loss.probes.div_ceil(chunks).min(last * t.patch_size * t.patch_size)
}

/// The parameters of the networks on the structure patches, which outlive the workspaces that hold
/// their activations: LPIPS's weights and the discriminator.
#[derive(Clone, Copy)]
struct PatchNets<'a> {
    lpips: Option<&'a wgpu::Buffer>,
    discriminator: Option<&'a DiscriminatorParams>,
}

/// The LPIPS weights on the device, or why LPIPS is unavailable: no weights file (the term then
/// weighs 0), or no structure patches it can see. A weights file that cannot be read is an error.
fn lpips_setup(gpu: &Gpu, config: &Config) -> Result<(Option<wgpu::Buffer>, Option<String>)> {
    let Some(path) = &config.loss.lpips_weights else {
        return Ok((None, Some("no weights file: set loss.lpips_weights (scripts/convert_lpips.py makes one)".into())));
    };
    let weights = crate::lpips::LpipsWeights::load(path)?;
    let t = &config.train;
    if t.structure_patches == 0 || t.structure_patch_size < crate::lpips::MIN_SIZE {
        let reason = format!(
            "it needs train.structure_patches of at least {} pixels a side (now {} of {})",
            crate::lpips::MIN_SIZE,
            t.structure_patches,
            t.structure_patch_size
        );
        return Ok((None, Some(reason)));
    }
    let buffer = gpu.storage_init("lpips weights", bytemuck::cast_slice(&weights.values))?;
    Ok((Some(buffer), None))
}

/// Row of the parameter L2 among `LOSS_NAMES`.
const TERM_PARAM: usize = 6;
const _: () = assert!(matches!(LOSS_NAMES[TERM_PARAM].as_bytes(), b"param"));

/// Per rendered cut (`cuts`, depths in any order), the index of the next finer rendered cut: the
/// partner of the consistency terms; `NO_CUT` for the finest.
pub fn finer_cuts(cuts: &[u32]) -> [u32; MAX_CUTS] {
    let mut finer = [NO_CUT; MAX_CUTS];
    for (c, &depth) in cuts.iter().enumerate() {
        let partner = cuts.iter().enumerate().filter(|&(_, &d)| d > depth).min_by_key(|&(_, &d)| d);
        if let Some((index, _)) = partner {
            finer[c] = index as u32;
        }
    }
    finer
}
