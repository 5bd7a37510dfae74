//! Every pass of a training step, each declared once: its WGSL file (`shaders/NAME.wgsl`), what it
//! includes, its workgroup size and its bindings (src/gpu/kernel.rs says what `kernel!` makes).
//!
//! A step runs them in this order (src/trainer.rs): rays -> samples (-> probes) -> node_scan -> scatter ->
//! (while resampling: samples, node_scan, scatter and field_forward of the proposal -> proposal_cdf ->
//! resample (-> probes) -> node_scan -> scatter) ->
//! field_forward -> render_forward -> the loss passes -> render_backward -> field_backward -> adam,
//! with occupancy (+ occupancy_mean) every few steps and loss_stats at the end.

use crate::gpu::layout::precision::{ActRecord, GradRecord, TableEntry, TablePair};
use crate::gpu::records::{
    AdamUniforms, Batch, DenseAdam, GpuCamera, GuardUniforms, LossUniforms, NetBatch, NetStage, Page, Patch,
    PatchNetUniforms, Ray, RayGrad, RayOutput, Sample, Sampling, Scene,
};
use crate::gpu::shader::KernelShape;
use crate::gpu::Gpu;
use crate::kernel;
use crate::octree::Node;
use anyhow::Result;

kernel! {
    /// One ray per pixel of the batch's patches (training) or of a view (rendering).
    pub struct Rays, RaysBindings = "rays" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            cameras: Read [GpuCamera],
            patches: Read [Patch],
            /// the batch's target pixels, RGBA8, gathered by the host
            targets: Read [u32],
            rays: ReadWrite [Ray],
        }
    }
}

kernel! {
    /// Stratified samples per ray and cut, their octree nodes, occupancy skipping, per-node counts.
    pub struct Samples, SamplesBindings = "samples" {
        includes: [Octree, PlaceSample],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            sampling: Uniform Sampling,
            rays: Read [Ray],
            nodes: Read [Node],
            occupancy: Read [f32],
            occupancy_mean: Read [f32],
            samples: ReadWrite [Sample],
            node_counts: Atomic [u32],
        }
    }
}

kernel! {
    /// The proposal's PDF per ray (hierarchical and importance sampling): its weights, dilated,
    /// with a uniform share, as a CDF; its evaluated samples counted.
    pub struct ProposalCdf, ProposalCdfBindings = "proposal_cdf" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            /// the proposal's batch (its samples_per_ray and one cut)
            batch: Uniform Batch,
            sampling: Uniform Sampling,
            samples: Read [Sample],
            field_out: Read [[f32; 4]],
            /// per ray, proposal_samples + 1 values
            cdf: ReadWrite [f32],
            /// [0]: the proposal's evaluated samples since the statistics read
            counters: Atomic [u32],
        }
    }
}

kernel! {
    /// The trained samples of the hierarchical and importance phases, by inverse CDF from the
    /// proposal; nodes, skipping and per-node counts as in `samples`.
    pub struct Resample, ResampleBindings = "resample" {
        includes: [Octree, PlaceSample],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            /// the proposal's batch (its samples_per_ray)
            proposal: Uniform Batch,
            sampling: Uniform Sampling,
            rays: Read [Ray],
            nodes: Read [Node],
            occupancy: Read [f32],
            occupancy_mean: Read [f32],
            cdf: Read [f32],
            samples: ReadWrite [Sample],
            node_counts: Atomic [u32],
        }
    }
}

kernel! {
    /// The probe groups after the ray samples: stencils in a child and its parent, seam points in
    /// two neighbours of one depth, and their per-node counts.
    pub struct Probes, ProbesBindings = "probes" {
        includes: [Octree],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            nodes: Read [Node],
            samples: ReadWrite [Sample],
            node_counts: Atomic [u32],
        }
    }
}

kernel! {
    /// Per-node offsets of the node-sorted active list, first workgroups, per-page dispatch sizes.
    pub struct NodeScan, NodeScanBindings = "node_scan" {
        includes: [],
        workgroup: |_| 256,
        bindings: {
            scene: Uniform Scene,
            node_counts: Read [u32],
            node_offsets: ReadWrite [u32],
            wg_first: ReadWrite [u32],
            dispatch_args: ReadWrite [u32],
            active_count: ReadWrite [u32],
        }
    }
}

kernel! {
    /// The node-sorted list of active samples.
    pub struct Scatter, ScatterBindings = "scatter" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            samples: Read [Sample],
            node_offsets: Read [u32],
            active_list: ReadWrite [u32],
        }
    }
}

kernel! {
    /// The field at every active sample of one parameter page's nodes.
    pub struct FieldForward, FieldForwardBindings = "field_forward" {
        includes: [Octree, NodeGroups, Field, StoreActivations],
        workgroup: |shape: &KernelShape| shape.field_workgroup,
        bindings: {
            scene: Uniform Scene,
            page: Uniform Page,
            rays: Read [Ray],
            nodes: Read [Node],
            samples: Read [Sample],
            /// the parameters, four to an element (the decoders are copied or read from here)
            params: Read [[f32; 4]],
            /// the hash tables' pairs: their f16 copy (mixed precision) or the parameters (f32)
            tables: Read [TablePair],
            active_list: Read [u32],
            node_counts: Read [u32],
            node_offsets: Read [u32],
            wg_first: Read [u32],
            field_out: ReadWrite [[f32; 4]],
            sanitized: Atomic [u32],
            /// ACT_VEC4 per active sample for field_backward (train.recompute_backward = false)
            activations: ReadWrite [ActRecord],
        }
    }
}

kernel! {
    /// Volume rendering of every slot (ray and cut).
    pub struct RenderForward, RenderForwardBindings = "render_forward" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            rays: Read [Ray],
            samples: Read [Sample],
            field_out: Read [[f32; 4]],
            outputs: ReadWrite [RayOutput],
        }
    }
}

/// Declares a loss on rendered rays (shaders/ray_loss.wgsl): one WGSL file, bound like every other
/// (`RayLossBindings`, declared once by the first of them, `LossMse`).
macro_rules! ray_loss {
    ($(#[doc = $doc:expr])* $name:ident, $($bindings:tt)+) => {
        kernel! {
            $(#[doc = $doc])*
            pub struct $name, $($bindings)+ {
                includes: [RayLoss],
                workgroup: |_| 64,
                bindings: {
                    batch: Uniform Batch,
                    loss: Uniform LossUniforms,
                    rays: Read [Ray],
                    outputs: Read [RayOutput],
                    /// each slot's dLoss/d(colour, opacity, depth), summed over the loss passes
                    ray_grads: ReadWrite [RayGrad],
                    /// per term t, the value of each slot at t * slots + slot (LOSS_NAMES order)
                    losses: ReadWrite [f32],
                }
            }
        }
    };
}

ray_loss! {
    /// The mean squared error against the targets: its gradient per slot, its value per slot.
    LossMse, RayLossBindings = "loss_mse"
}

ray_loss! {
    /// Total variation of the rendered patches' colour and depth: its gradient per slot.
    LossTv, use RayLossBindings = "loss_tv"
}

ray_loss! {
    /// 1 - SSIM of the rendered patches' colour against the targets, over square windows.
    LossSsim, use RayLossBindings = "loss_ssim"
}

ray_loss! {
    /// Depth agreement (smooth L1) of each rendered cut with the next finer one.
    LossDepthConsistency, use RayLossBindings = "loss_depth_consistency"
}

kernel! {
    /// The input of a network on the structure patches (LPIPS, the discriminator): the chunk's
    /// squares rendered at each cut and their targets, scaled.
    pub struct PatchNetInput, PatchNetInputBindings = "patch_net_input" {
        includes: [RayLoss],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            loss: Uniform LossUniforms,
            net: Uniform PatchNetUniforms,
            rays: Read [Ray],
            outputs: Read [RayOutput],
            /// every tensor of every image
            acts: ReadWrite [f32],
        }
    }
}

kernel! {
    /// A convolution and its ReLU (one `NetStage`), forward over a network's images.
    pub struct Conv, ConvBindings = "conv" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            net: Uniform NetBatch,
            stage: Uniform NetStage,
            weights: Read [f32],
            acts: ReadWrite [f32],
        }
    }
}

kernel! {
    /// A max pool (one `NetStage`), forward (bound as the convolutions are; no weights read).
    pub struct MaxPool, use ConvBindings = "max_pool" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            net: Uniform NetBatch,
            stage: Uniform NetStage,
            weights: Read [f32],
            acts: ReadWrite [f32],
        }
    }
}

kernel! {
    /// A convolution and its ReLU, backward to its input's gradient.
    pub struct ConvBackward, ConvBackwardBindings = "conv_backward" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            net: Uniform NetBatch,
            stage: Uniform NetStage,
            weights: Read [f32],
            acts: Read [f32],
            /// dL/d(every tensor), laid out as `acts`
            act_grads: ReadWrite [f32],
        }
    }
}

kernel! {
    /// A max pool, backward to its input's gradient.
    pub struct MaxPoolBackward, use ConvBackwardBindings = "max_pool_backward" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            net: Uniform NetBatch,
            stage: Uniform NetStage,
            weights: Read [f32],
            acts: Read [f32],
            act_grads: ReadWrite [f32],
        }
    }
}

kernel! {
    /// LPIPS's linear heads: each render's distance per position, and its gradient to the features.
    pub struct LpipsHead, LpipsHeadBindings = "lpips_head" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            lpips: Uniform PatchNetUniforms,
            weights: Read [f32],
            acts: Read [f32],
            act_grads: ReadWrite [f32],
            /// per render and position, the distance summed over the layers
            values: ReadWrite [f32],
        }
    }
}

kernel! {
    /// A network's value per square and its gradient per slot (from the input tensor's gradient):
    /// LPIPS, the adversarial term (and the discriminator's own loss).
    pub struct LossPatchNet, LossPatchNetBindings = "loss_patch_net" {
        includes: [RayLoss],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            loss: Uniform LossUniforms,
            net: Uniform PatchNetUniforms,
            rays: Read [Ray],
            act_grads: Read [f32],
            values: Read [f32],
            ray_grads: ReadWrite [RayGrad],
            losses: ReadWrite [f32],
        }
    }
}

kernel! {
    /// A convolution's weight and bias gradients (one `NetStage`) over the images with a backward.
    pub struct ConvWeightsBackward, ConvWeightsBackwardBindings = "conv_weights_backward" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            net: Uniform NetBatch,
            stage: Uniform NetStage,
            acts: Read [f32],
            act_grads: Read [f32],
            /// laid out as the network's weights
            grads: ReadWrite [f32],
        }
    }
}

kernel! {
    /// The discriminator's logits: the generator's and the discriminator's losses per position,
    /// their gradients to the logits.
    pub struct DiscriminatorLoss, DiscriminatorLossBindings = "discriminator_loss" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            net: Uniform PatchNetUniforms,
            acts: Read [f32],
            /// the generator's gradient (renders' logits)
            gen_grads: ReadWrite [f32],
            /// the discriminator's gradient (every image's logits)
            disc_grads: ReadWrite [f32],
            values: ReadWrite [f32],
        }
    }
}

kernel! {
    /// Adam over a small dense network (the discriminator): every parameter every step.
    pub struct AdamDense, AdamDenseBindings = "adam_dense" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            settings: Uniform DenseAdam,
            params: ReadWrite [f32],
            grads: Read [f32],
            m1: ReadWrite [f32],
            m2: ReadWrite [f32],
        }
    }
}

kernel! {
    /// Normal and density consistency and seam continuity on the probes: values per group, their
    /// gradient per probe.
    pub struct LossProbes, LossProbesBindings = "loss_probes" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            loss: Uniform LossUniforms,
            samples: Read [Sample],
            field_out: Read [[f32; 4]],
            sample_grads: ReadWrite [GradRecord],
            losses: ReadWrite [f32],
            /// the loss scale
            guard: Read [f32],
        }
    }
}

kernel! {
    /// The parameter L2's value: partial sums of p^2 over one page (its gradient is Adam's).
    pub struct ParamNorm, ParamNormBindings = "param_norm" {
        includes: [],
        workgroup: |_| 256,
        bindings: {
            page: Uniform Page,
            params: Read [f32],
            /// NORM_PARTIALS sums per page
            partials: ReadWrite [f32],
        }
    }
}

kernel! {
    /// Density sparsity: its gradient added to the evaluated samples' density gradients.
    pub struct LossSparsity, LossSparsityBindings = "loss_sparsity" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            loss: Uniform LossUniforms,
            samples: Read [Sample],
            field_out: Read [[f32; 4]],
            sample_grads: ReadWrite [GradRecord],
            losses: ReadWrite [f32],
            /// the loss scale
            guard: Read [f32],
        }
    }
}

kernel! {
    /// dLoss/d(rgb, sigma) per sample from dLoss/d(colour, opacity, depth) per slot.
    pub struct RenderBackward, RenderBackwardBindings = "render_backward" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            samples: Read [Sample],
            field_out: Read [[f32; 4]],
            outputs: Read [RayOutput],
            ray_grads: Read [RayGrad],
            sample_grads: ReadWrite [GradRecord],
            sanitized: Atomic [u32],
            /// the loss scale
            guard: Read [f32],
        }
    }
}

kernel! {
    /// Parameter gradients of one page's nodes from the per-sample gradients.
    pub struct FieldBackward, FieldBackwardBindings = "field_backward" {
        includes: [Octree, NodeGroups, Field, FieldBackward],
        workgroup: |shape: &KernelShape| shape.field_workgroup,
        bindings: {
            scene: Uniform Scene,
            page: Uniform Page,
            rays: Read [Ray],
            nodes: Read [Node],
            samples: Read [Sample],
            /// the parameters, four to an element (the decoders are copied or read from here)
            params: Read [[f32; 4]],
            tables: Read [TablePair],
            sample_grads: Read [GradRecord],
            active_list: Read [u32],
            node_counts: Read [u32],
            node_offsets: Read [u32],
            wg_first: Read [u32],
            grads: FloatAtomic [f32],
            /// 1 per block of ADAM_BLOCK parameters with a gradient
            touched: ReadWrite [u32],
            /// what field_forward stored (train.recompute_backward = false)
            activations: Read [ActRecord],
        }
    }
}

kernel! {
    /// Adam over one page's nodes with samples: decoders, dense tables, sparse nodes' touched entries.
    pub struct AdamNodes, AdamNodesBindings = "adam_nodes" {
        includes: [Octree, NodeGroups, HashGrid, AdamUpdate],
        workgroup: |shape: &KernelShape| shape.field_workgroup,
        bindings: {
            adam: Uniform AdamUniforms,
            page: Uniform Page,
            nodes: Read [Node],
            samples: Read [Sample],
            active_list: Read [u32],
            node_counts: Read [u32],
            node_offsets: Read [u32],
            wg_first: Read [u32],
            params: ReadWrite [[f32; 4]],
            /// the hash tables' f16 copy, kept up to date (mixed precision)
            tables: ReadWrite [TableEntry],
            m1: ReadWrite [[f32; 4]],
            m2: ReadWrite [[f32; 4]],
            /// the gradients, for entries only one invocation visits (plain loads are far cheaper
            /// than atomics on a CPU)
            grad_values: ReadWrite [[f32; 4]],
            /// the same buffer, for entries several invocations may reach
            grads: Atomic [u32],
            /// the sparse nodes' entries grad_norm counted (a bit each), cleared as they are claimed
            visited: Atomic [u32],
            guard: Read [f32],
            sanitized: Atomic [u32],
        }
    }
}

kernel! {
    /// The statistics of the step's gradient over one page's nodes with samples: partial sums per
    /// tensor, for the guard.
    pub struct GradNorm, GradNormBindings = "grad_norm" {
        includes: [Octree, NodeGroups, HashGrid, GradStats],
        workgroup: |shape: &KernelShape| shape.field_workgroup,
        bindings: {
            page: Uniform Page,
            nodes: Read [Node],
            samples: Read [Sample],
            active_list: Read [u32],
            node_counts: Read [u32],
            node_offsets: Read [u32],
            wg_first: Read [u32],
            /// four gradients per element
            grads: Read [[f32; 4]],
            visited: Atomic [u32],
            /// GRAD_SLOTS x GRAD_SLOT_WORDS partial sums
            grad_partials: FloatAtomic [f32],
            /// largest magnitude per tensor (bits)
            grad_max: Atomic [u32],
        }
    }
}

kernel! {
    /// The statistics of the step's gradient over one page's flagged blocks (a step in chunks).
    pub struct GradNormBlocks, GradNormBlocksBindings = "grad_norm_blocks" {
        includes: [GradStats],
        workgroup: |_| 64,
        bindings: {
            page: Uniform Page,
            grads: Read [f32],
            touched: Read [u32],
            grad_partials: FloatAtomic [f32],
            grad_max: Atomic [u32],
        }
    }
}

kernel! {
    /// The global norm, clipping and the anomaly detector: what Adam does with the step's gradient.
    pub struct GradGuard, GradGuardBindings = "grad_guard" {
        includes: [],
        workgroup: |_| crate::gpu::records::GRAD_SLOTS,
        bindings: {
            settings: Uniform GuardUniforms,
            grad_partials: ReadWrite [f32],
            grad_max: ReadWrite [u32],
            /// the guard's state (records::guard)
            guard: ReadWrite [f32],
        }
    }
}

kernel! {
    /// Adam over the flagged blocks of one page (a step in chunks); clears their gradients and flags.
    pub struct AdamBlocks, AdamBlocksBindings = "adam_blocks" {
        includes: [AdamUpdate],
        workgroup: |_| 64,
        bindings: {
            adam: Uniform AdamUniforms,
            page: Uniform Page,
            params: ReadWrite [[f32; 4]],
            tables: ReadWrite [TableEntry],
            /// first moments
            m1: ReadWrite [[f32; 4]],
            /// second moments
            m2: ReadWrite [[f32; 4]],
            grads: ReadWrite [f32],
            /// the blocks to update (cleared here)
            touched: ReadWrite [u32],
            guard: Read [f32],
            sanitized: Atomic [u32],
        }
    }
}

kernel! {
    /// The occupancy grid's update over one page's nodes.
    pub struct Occupancy, OccupancyBindings = "occupancy" {
        includes: [Octree, Field],
        workgroup: |shape: &KernelShape| shape.field_workgroup,
        bindings: {
            scene: Uniform Scene,
            sampling: Uniform Sampling,
            page: Uniform Page,
            nodes: Read [Node],
            /// the parameters, four to an element (the decoders are copied or read from here)
            params: Read [[f32; 4]],
            tables: Read [TablePair],
            /// the grid's cells sorted by phase, then node
            occ_cells: Read [u32],
            /// (node, first index in occ_cells, cells, 0) per workgroup
            occ_groups: Read [[u32; 4]],
            /// first group of each (phase, page)
            occ_group_base: Read [u32],
            occupancy: ReadWrite [f32],
            sanitized: Atomic [u32],
        }
    }
}

kernel! {
    /// Mixed precision: the hash tables' f16 copy of one page made again from the f32 parameters.
    pub struct TablesRefresh, TablesRefreshBindings = "tables_refresh" {
        includes: [],
        workgroup: |_| 256,
        bindings: {
            page: Uniform Page,
            params: Read [f32],
            tables: ReadWrite [TableEntry],
        }
    }
}

kernel! {
    /// The occupancy grid's mean density.
    pub struct OccupancyMean, OccupancyMeanBindings = "occupancy_mean" {
        includes: [],
        workgroup: |_| 256,
        bindings: {
            sampling: Uniform Sampling,
            occupancy: Read [f32],
            occupancy_mean: ReadWrite [f32],
        }
    }
}

kernel! {
    /// Adds the step's losses and evaluated samples to the statistics buffer.
    pub struct LossStats, LossStatsBindings = "loss_stats" {
        includes: [],
        workgroup: |_| 64,
        bindings: {
            batch: Uniform Batch,
            loss: Uniform LossUniforms,
            outputs: Read [RayOutput],
            losses: Read [f32],
            stats: ReadWrite [f32],
            /// the guard's state: the step's loss is added to it
            guard: ReadWrite [f32],
        }
    }
}

/// Declares `Kernels`, every pass compiled for one kernel shape, and the list of their sources.
macro_rules! kernel_set {
    ($($field:ident: $kernel:ident),* $(,)?) => {
        /// Every pass, compiled for one kernel shape.
        pub struct Kernels {
            $(pub $field: $kernel),*
        }

        impl Kernels {
            pub fn new(gpu: &Gpu, shape: &KernelShape) -> Result<Self> {
                Ok(Self { $($field: $kernel::new(gpu, shape)?),* })
            }

            /// (name, WGSL source) of every pass, for validation tests.
            pub fn sources(shape: &KernelShape) -> Vec<(&'static str, String)> {
                vec![$(($kernel::NAME, $kernel::source(shape))),*]
            }
        }
    };
}

kernel_set! {
    rays: Rays,
    samples: Samples,
    proposal_cdf: ProposalCdf,
    resample: Resample,
    probes: Probes,
    node_scan: NodeScan,
    scatter: Scatter,
    field_forward: FieldForward,
    render_forward: RenderForward,
    loss_mse: LossMse,
    loss_tv: LossTv,
    loss_ssim: LossSsim,
    loss_depth_consistency: LossDepthConsistency,
    loss_sparsity: LossSparsity,
    loss_probes: LossProbes,
    patch_net_input: PatchNetInput,
    conv: Conv,
    max_pool: MaxPool,
    conv_backward: ConvBackward,
    max_pool_backward: MaxPoolBackward,
    lpips_head: LpipsHead,
    loss_patch_net: LossPatchNet,
    conv_weights_backward: ConvWeightsBackward,
    discriminator_loss: DiscriminatorLoss,
    adam_dense: AdamDense,
    param_norm: ParamNorm,
    render_backward: RenderBackward,
    field_backward: FieldBackward,
    adam_nodes: AdamNodes,
    adam_blocks: AdamBlocks,
    grad_norm: GradNorm,
    grad_norm_blocks: GradNormBlocks,
    grad_guard: GradGuard,
    occupancy: Occupancy,
    occupancy_mean: OccupancyMean,
    tables_refresh: TablesRefresh,
    loss_stats: LossStats,
}
