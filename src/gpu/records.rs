//! The structs the kernels share with the host, each declared once (`gpu_struct!` writes the WGSL
//! twin), and the uniforms split by concern: a pass binds only the ones it reads.

use crate::gpu_struct;

/// Tree cuts rendered per batch at most (SPEC §1 "multi-scale outputs").
pub const MAX_CUTS: usize = 4;

/// The loss terms, in the order of their rows in the per-ray loss buffer and the statistics.
pub const LOSS_NAMES: [&str; LOSS_TERMS] = [
    "mse",
    "tv",
    "tv_depth",
    "sparsity",
    "ssim",
    "depth_consistency",
    "param",
    "normal_consistency",
    "density_consistency",
    "seam",
    "lpips",
    "adversarial",
    "discriminator",
];
pub const LOSS_TERMS: usize = 13;

/// Whether each term (`LOSS_NAMES` order) is a per-cut term, weighed by its cut's level weight. The
/// consistency terms compare two cuts: they are weighed by their lambda alone, and each pair's value
/// is kept at the coarser cut's index. The parameter L2 is the model's, at no cut (kept at index 0).
/// The terms on probes (normal and density consistency, seam continuity; loss_probes.wgsl) compare
/// nodes, not cuts: their values are kept at cut 0. The discriminator's own loss trains the
/// discriminator, not the field: it weighs 0 in the field's loss and is kept at cut 0.
pub const LOSS_PER_CUT: [bool; LOSS_TERMS] =
    [true, true, true, true, true, false, false, false, false, false, true, true, false];

/// Probes per probe group (probes.wgsl): a stencil of 7 points in a child node and the same 7 in its
/// parent, then a point on a face shared by two nodes of one depth, in each of them.
pub const PROBES_PER_GROUP: u32 = 16;

/// Partial sums per page of the parameter L2's reduction (`param_norm`: one per workgroup).
pub const NORM_PARTIALS: u32 = 64;

/// `LossUniforms::finer_cut` of the finest rendered cut: it has no finer partner.
pub const NO_CUT: u32 = u32::MAX;

/// Loss terms a `LossUniforms` can weigh (`lambdas`).
pub const MAX_LOSS_TERMS: usize = 16;
const _: () = assert!(LOSS_TERMS <= MAX_LOSS_TERMS);

/// Where the statistics count, per cut slot, the batches that rendered it (a step renders its coarser
/// cuts on every `loss.coarse_every`-th step only).
pub const STATS_CUT_BATCHES: usize = 3 + LOSS_TERMS * MAX_CUTS;
/// The statistics buffer: batches summed, evaluated samples, the weighted loss the optimiser saw,
/// then per loss term and cut the term's mean (at 3 + term * MAX_CUTS + cut), then per cut the
/// batches that rendered it (at STATS_CUT_BATCHES + cut).
pub const STATS_WORDS: usize = STATS_CUT_BATCHES + MAX_CUTS;

/// Counters of non-finite values that kernels replaced by 0, one per kind of pass (WGSL constants
/// `SANITIZED_FIELD`, ...).
pub const SANITIZED_SLOTS: [&str; 4] = ["field", "render", "adam", "occupancy"];

/// The tensors the gradient statistics are kept for: every node's hash tables, density decoder,
/// colour decoder (WGSL `tensor_of`).
pub const GRAD_TENSORS: [&str; 3] = ["hash", "density", "colour"];

/// Slots the gradient statistics' workgroups add their partial sums to (workgroup w to slot
/// w % GRAD_SLOTS; grad_guard sums the slots with one workgroup of as many invocations).
pub const GRAD_SLOTS: u32 = 64;

/// Per slot and tensor: sum of squares, sum, count of entries with a gradient.
pub const GRAD_SLOT_WORDS: u32 = 3 * GRAD_TENSORS.len() as u32;

/// The guard's state (one f32 buffer, `guard`), word by word: what Adam applies this step, the
/// detector's history, and what the host reads with the statistics ("since the read" counters are
/// cleared by the host).
pub mod guard {
    /// Factor Adam multiplies the gradients by (the clipping; 1 when the norm is within bounds).
    pub const SCALE: u32 = 0;
    /// 1: Adam drops this step's gradients (an anomaly).
    pub const SKIP: u32 = 1;
    /// The step's weighted loss, summed by loss_stats over the step's chunks.
    pub const STEP_LOSS: u32 = 2;
    /// Accepted values in the history, and the next slot of its ring.
    pub const FILLED: u32 = 3;
    pub const NEXT: u32 = 4;
    /// Anomalies in a row now.
    pub const RUN: u32 = 5;
    /// The last step's global gradient norm and loss.
    pub const NORM: u32 = 6;
    pub const LOSS: u32 = 7;
    /// Since the host's last read: finite norms summed, steps, anomalies by kind, skipped and
    /// clipped steps, the longest run of anomalies.
    pub const NORM_SUM: u32 = 8;
    pub const STEPS: u32 = 9;
    pub const ANOMALY_LOSS: u32 = 10;
    pub const ANOMALY_GRAD: u32 = 11;
    pub const ANOMALY_NONFINITE: u32 = 12;
    pub const SKIPPED: u32 = 13;
    pub const CLIPPED: u32 = 14;
    pub const MAX_RUN: u32 = 15;
    /// Mixed precision (dynamic loss scaling): the scale the per-sample gradients are multiplied
    /// by, the steps in a row without an overflow, and (since the host's last read) the overflows,
    /// each a skipped step that halved the scale. The scale stays 1 in f32.
    pub const OVERFLOWS: u32 = 16;
    pub const LOSS_SCALE: u32 = 17;
    pub const CLEAN_STEPS: u32 = 18;
    /// Per tensor (GRAD_TENSORS), the last step's norm, mean, standard deviation and largest
    /// magnitude over its entries with a gradient.
    pub const TENSORS: u32 = 19;
    /// The loss history, then the norm history (MAX_ANOMALY_WINDOW each).
    pub const HISTORY: u32 = TENSORS + 4 * super::GRAD_TENSORS.len() as u32;
    pub const WORDS: u32 = HISTORY + 2 * crate::config::MAX_ANOMALY_WINDOW;
}

/// The occupancy grid is refreshed in this many interleaved parts, one per update.
pub const OCC_PHASES: u32 = 4;

gpu_struct! {
    /// One batch of rays: a training step's patches or a chunk of a rendered view.
    pub struct Batch {
        pub n_rays: u32,
        pub samples_per_ray: u32,
        /// tree cuts rendered per ray: slot c * n_rays + r renders ray r at cut cuts[c]
        pub n_cuts: u32,
        pub seed: u32,
        /// 1: rays from the patches, jittered, with targets; 0: a view's pixels from ray_offset
        pub training: u32,
        pub patch_size: u32,
        pub ray_offset: u32,
        /// camera index when rendering
        pub view: u32,
        pub cuts: [u32; 4],
        pub background: [f32; 3],
        /// 1: training rays see a random background where the photo is transparent
        pub random_background: u32,
        /// Structure patches (train.structure_patches): the batch's first `grouped_patches` patches
        /// come in groups of group_tiles^2 tiles, each group one square of group_tiles * patch_size
        /// pixels, tiles row by row; the other patches stand alone
        pub group_tiles: u32,
        pub grouped_patches: u32,
        /// probe groups after the ray samples (training: loss.probes spread over the step's chunks;
        /// rendering: 0); their samples start at n_rays * n_cuts * samples_per_ray
        pub probe_groups: u32,
        /// which probe terms are on: bit 0 the stencils (normal and density consistency), bit 1
        /// the seams
        pub probe_kinds: u32,
    }
}

gpu_struct! {
    /// The occupancy grid: how samples skip empty space, and its update.
    pub struct Sampling {
        /// cells per axis (0: no grid)
        pub resolution: u32,
        /// a sample is skipped below min(threshold / delta, grid mean)
        pub threshold: f32,
        /// 1 once the grid is trusted to skip empty space
        pub skip: u32,
        /// chance that a training sample in an empty cell is evaluated anyway
        pub explore: f32,
        pub decay: f32,
        /// which of the OCC_PHASES subsets of cells an update visits
        pub phase: u32,
        pub seed: u32,
        /// share of the proposal's PDF spread uniformly (hierarchical and importance phases)
        pub proposal_floor: f32,
    }
}

gpu_struct! {
    /// Constants of the field and its paging.
    pub struct Scene {
        pub max_density: f32,
        pub n_nodes: u32,
        pub n_pages: u32,
        /// every page but the last holds this many whole nodes
        pub nodes_per_page: u32,
    }
}

gpu_struct! {
    /// One page of the parameter buffers: whole nodes first_node .. first_node + n_nodes.
    pub struct Page {
        pub first_node: u32,
        pub n_nodes: u32,
        pub index: u32,
        pub n_params: u32,
    }
}

gpu_struct! {
    /// Adam's step (SPEC §4): two learning rates, the moments' decays and bias corrections.
    pub struct AdamUniforms {
        pub lr_hash: f32,
        pub lr_mlp: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub eps: f32,
        /// 1 - beta^step
        pub bias1: f32,
        pub bias2: f32,
        /// the parameter L2's gradient per unit parameter: 2 x its weight / the model's parameters
        pub l2: f32,
    }
}

gpu_struct! {
    /// The guard's settings (grad_guard.wgsl): clipping and the anomaly detector.
    pub struct GuardUniforms {
        /// largest global gradient norm (0: no clipping)
        pub clip: f32,
        /// standard deviations above the mean that make an anomaly (0: detector off)
        pub sigma: f32,
        /// accepted steps in the detector's mean (at most MAX_ANOMALY_WINDOW)
        pub window: u32,
        /// an anomaly is also at least this multiple of the mean
        pub min_ratio: f32,
        /// mixed precision: the loss scale doubles after this many steps in a row without overflow
        pub growth_steps: u32,
    }
}

gpu_struct! {
    /// The loss passes' weights.
    pub struct LossUniforms {
        /// 1 / (3 * rays with a target): the mean over rays and channels
        pub inv_count: f32,
        /// 1 / (sample slots of the step's rays): the mean over samples
        pub inv_samples: f32,
        /// 1 / (3 * adjacent pixel pairs per direction in the step's patches)
        pub inv_pairs: f32,
        /// 1 / (rays with a target): the mean over rays of the consistency terms
        pub inv_rays: f32,
        /// level weight of each rendered cut
        pub cut_weights: [f32; 4],
        /// per rendered cut, the index of the next finer rendered cut (the partner of the consistency
        /// terms), NO_CUT for the finest
        pub finer_cut: [u32; 4],
        /// 1 / (3 * SSIM windows wholly on the image in the step's patches)
        pub inv_windows: f32,
        /// edge of SSIM's square window (pixels)
        pub ssim_window: u32,
        /// the depth consistency's smooth-L1 threshold (scene units)
        pub huber_delta: f32,
        /// 1, or an injected loss spike (`--inject-fault loss-spike@STEP`): the MSE's value and
        /// gradient are multiplied by it
        pub fault: f32,
        /// each term's weight (lambda x schedule x balancer), term t at [t / 4][t % 4]
        pub lambdas: [[f32; 4]; 4],
        /// 1 / (probe groups of the step): the mean over probe groups
        pub inv_probes: f32,
        /// 1 / (structure patches of the step): LPIPS's mean over the squares
        pub inv_squares: f32,
        pub _pad1: f32,
        pub _pad2: f32,
    }
}

gpu_struct! {
    /// A ray through the scene cube.
    pub struct Ray {
        pub origin: [f32; 3],
        pub near: f32,
        pub dir: [f32; 3],
        pub far: f32,
        /// rgb target, then the ray's weight in the loss (0 for rays off the image)
        pub target_rgb: [f32; 4],
        pub pixel_radius: f32,
        pub pixel: u32,
        /// training background behind the ray, RGBA8
        pub background: u32,
        pub _pad: u32,
    }
}

gpu_struct! {
    /// One sample along a ray, in one tree cut.
    pub struct Sample {
        pub pos: [f32; 3],
        /// the node that evaluates it; NO_NODE when skipped as empty space
        pub node: u32,
        pub t: f32,
        pub delta: f32,
        /// the ray (not the slot: the field needs only its direction)
        pub ray: u32,
        /// place among the active samples of its node
        pub rank: u32,
    }
}

gpu_struct! {
    /// What the forward render gives per ray and cut (slot).
    pub struct RayOutput {
        /// colour, background included
        pub rgb: [f32; 3],
        pub opacity: f32,
        /// expected distance along the ray (background: 0)
        pub depth: f32,
        /// samples the field evaluated (not skipped as empty space)
        pub evaluated: f32,
        /// the node of the sample of largest weight (the first on ties), -1 when no weight is
        /// positive: the viewer's level map and node picking (indices < 2^24, exact in f32)
        pub node: f32,
        pub _pad1: f32,
    }
}

gpu_struct! {
    /// dLoss / d(output) per ray and cut, summed by the loss passes.
    pub struct RayGrad {
        pub rgb: [f32; 3],
        pub opacity: f32,
        pub depth: f32,
        pub _pad0: f32,
        pub _pad1: f32,
        pub _pad2: f32,
    }
}

gpu_struct! {
    /// A pinhole camera with OpenCV distortion, in the scene cube.
    pub struct GpuCamera {
        /// rows of the camera-to-cube matrix [R | position]
        pub rows: [[f32; 4]; 3],
        /// fx, fy, cx, cy at full resolution
        pub intrinsics: [f32; 4],
        /// OpenCV k1, k2, p1, p2
        pub distortion: [f32; 4],
        pub width: u32,
        pub height: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

gpu_struct! {
    /// A square patch of one training view at one pyramid level.
    pub struct Patch {
        pub view: u32,
        pub level: u32,
        pub x0: u32,
        pub y0: u32,
    }
}

impl From<&crate::data::Camera> for GpuCamera {
    fn from(c: &crate::data::Camera) -> Self {
        let r = c.rotation;
        let p = c.position;
        Self {
            rows: [
                [r[0][0], r[0][1], r[0][2], p[0]],
                [r[1][0], r[1][1], r[1][2], p[1]],
                [r[2][0], r[2][1], r[2][2], p[2]],
            ],
            intrinsics: [c.fx, c.fy, c.cx, c.cy],
            distortion: c.distortion,
            width: c.width,
            height: c.height,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

gpu_struct! {
    /// A convolutional network's batch (conv.wgsl, max_pool.wgsl and their backwards): images
    /// 0..images go forward, the first `backward_images` of them backward.
    pub struct NetBatch {
        pub images: u32,
        pub backward_images: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

gpu_struct! {
    /// One stage of a convolutional network: a convolution (+ ReLU) or a max pool from one tensor of
    /// the activations buffer to another. A tensor holds every image's channels x size x size floats
    /// (image i's at first + i * channels * size^2), channel-major, rows of pixels.
    pub struct NetStage {
        /// first float of the input and the output tensor
        pub input: u32,
        pub output: u32,
        pub in_channels: u32,
        pub out_channels: u32,
        pub in_size: u32,
        pub out_size: u32,
        pub kernel: u32,
        pub stride: u32,
        pub pad: u32,
        /// first float of the weights ([out][in][k][k]) and of the biases in `weights`
        pub weights: u32,
        pub bias: u32,
        /// the backward adds to the input's gradient (1: a head or a later stage wrote it first) or
        /// writes it (0)
        pub accumulate: u32,
        /// 1: a ReLU follows the convolution; 0: the output is linear (a discriminator's logits)
        pub relu: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

gpu_struct! {
    /// A network on a chunk's structure patches, LPIPS (src/lpips.rs) or the discriminator
    /// (src/adversarial.rs): images cut * squares + square are the renders, n_cuts * squares +
    /// square the targets.
    pub struct PatchNetUniforms {
        /// structure patches of the chunk
        pub squares: u32,
        pub n_cuts: u32,
        /// their edge in pixels
        pub size: u32,
        /// positions of the largest output tensor: per render, the values loss_patch_net sums
        pub positions: u32,
        /// per feature layer (LPIPS's heads; the discriminator's logits are the first): its
        /// tensor's first float, channels, edge, first head weight
        pub features: [[u32; 4]; 5],
        /// the input's scaling: (2 x - 1 - shift) / scale per channel (w unused)
        pub shift: [f32; 4],
        pub scale: [f32; 4],
        /// the loss term of the renders' values and gradients (`LOSS_NAMES` index)
        pub term: u32,
        /// a second term whose value per square loss_patch_net writes at cut 0 (the
        /// discriminator's own loss), or NO_TERM
        pub second_term: u32,
        /// images forward (renders and targets): the second term's values follow theirs
        pub images: u32,
        pub _pad0: u32,
    }
}

/// `PatchNetUniforms::second_term` of a network with one term.
pub const NO_TERM: u32 = u32::MAX;

gpu_struct! {
    /// Adam over a small dense network (adam_dense.wgsl): lr, betas, epsilon, the bias
    /// corrections 1 - beta^t of this step, and the parameter count.
    pub struct DenseAdam {
        pub lr: f32,
        pub beta1: f32,
        pub beta2: f32,
        pub epsilon: f32,
        pub correction1: f32,
        pub correction2: f32,
        pub count: u32,
        pub _pad0: u32,
    }
}
