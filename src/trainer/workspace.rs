//! The buffers of one batch of rays on its way through the passes: rays, samples, field outputs, the
//! node-sorted active list, per-ray outputs and gradients. Training has one workspace and rendering
//! another, so a render never touches what a training step in flight reads or writes.

use crate::gpu::records::{
    Batch, GpuCamera, LossUniforms, Patch, Ray, RayGrad, RayOutput, Sample, Sampling, LOSS_TERMS, PROBES_PER_GROUP,
};
use crate::gpu::Gpu;
use crate::kernels::{
    AdamNodesBindings, FieldBackwardBindings, FieldForwardBindings, GradNormBindings, Kernels, LossProbesBindings,
    LossSparsityBindings, LossStatsBindings, NodeScanBindings, ProbesBindings, ProposalCdfBindings, RayLossBindings,
    RaysBindings, RenderBackwardBindings, RenderForwardBindings, ResampleBindings, SamplesBindings, ScatterBindings,
};
use crate::trainer::model::Model;
use anyhow::Result;

/// Sizes a workspace is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceSize {
    /// Rays per batch.
    pub rays: u32,
    /// Tree cuts rendered per ray.
    pub cuts: u32,
    pub samples_per_ray: u32,
    /// Patches per batch (training) or 0 (rendering).
    pub patches: u32,
    /// Cameras the batch may use.
    pub cameras: u32,
    /// Probe groups a batch may have (training with a term on probes; else 0).
    pub probe_groups: u32,
    /// Samples per ray of the proposal the training batches resample from (0: they never do).
    pub proposal_samples: u32,
    /// Floats of the field's activations kept per sample for a backward that reads them (training
    /// with `train.recompute_backward = false`: `FieldLayout::act_words`), else 0.
    pub act_words: u32,
    /// Mixed precision: the per-sample gradients and stored activations are f16.
    pub half: bool,
}

impl WorkspaceSize {
    pub fn slots(&self) -> u64 {
        u64::from(self.rays) * u64::from(self.cuts)
    }

    /// Ray samples and probes.
    pub fn samples(&self) -> u64 {
        self.slots() * u64::from(self.samples_per_ray) + u64::from(self.probe_groups) * u64::from(PROBES_PER_GROUP)
    }
}

pub struct Workspace {
    pub size: WorkspaceSize,
    pub batch: wgpu::Buffer,
    pub sampling: wgpu::Buffer,
    pub loss: wgpu::Buffer,
    pub cameras: wgpu::Buffer,
    pub patches: wgpu::Buffer,
    pub targets: wgpu::Buffer,
    pub rays: wgpu::Buffer,
    pub samples: wgpu::Buffer,
    pub node_counts: wgpu::Buffer,
    pub node_offsets: wgpu::Buffer,
    pub wg_first: wgpu::Buffer,
    /// Indirect workgroup counts of the field passes, (x, y, z) per page.
    pub dispatch_args: wgpu::Buffer,
    pub active_count: wgpu::Buffer,
    pub active_list: wgpu::Buffer,
    pub field_out: wgpu::Buffer,
    pub outputs: wgpu::Buffer,
    pub ray_grads: wgpu::Buffer,
    pub losses: wgpu::Buffer,
    pub sample_grads: wgpu::Buffer,
    /// `act_words` floats per sample, else one vec4: no room (see `store_acts`).
    pub activations: wgpu::Buffer,
    pub groups: Groups,
    /// LPIPS's buffers (training with a weights file and structure patches; `trainer::lpips`).
    pub lpips: Option<crate::trainer::lpips::Lpips>,
    /// The discriminator's activations (training with structure patches it can see).
    pub adversarial: Option<crate::trainer::adversarial::Adversarial>,
    /// The proposal's uniforms, CDFs and bind groups (training with `train.hierarchical_from`).
    pub proposal: Option<Proposal>,
    /// Device bytes of its buffers.
    pub bytes: u64,
}

/// What the hierarchical and importance phases add (SPEC §5): the proposal's batch uniforms (its
/// stratified samples at one coarse cut, in the workspace's sample buffers before the trained ones
/// replace them), a CDF per ray, and the bind groups of the passes that make and read them.
pub struct Proposal {
    pub batch: wgpu::Buffer,
    pub cdf: wgpu::Buffer,
    pub samples: wgpu::BindGroup,
    pub scatter: wgpu::BindGroup,
    pub cdf_group: wgpu::BindGroup,
    pub resample: wgpu::BindGroup,
}

/// The workspace's bind groups, one per pass (per page for the field passes).
pub struct Groups {
    pub rays: wgpu::BindGroup,
    pub samples: wgpu::BindGroup,
    pub probes: wgpu::BindGroup,
    pub node_scan: wgpu::BindGroup,
    pub scatter: wgpu::BindGroup,
    pub field_forward: Vec<wgpu::BindGroup>,
    pub render_forward: wgpu::BindGroup,
    pub loss_mse: wgpu::BindGroup,
    pub loss_tv: wgpu::BindGroup,
    pub loss_ssim: wgpu::BindGroup,
    pub loss_depth_consistency: wgpu::BindGroup,
    pub loss_sparsity: wgpu::BindGroup,
    pub loss_probes: wgpu::BindGroup,
    pub render_backward: wgpu::BindGroup,
    pub field_backward: Vec<wgpu::BindGroup>,
    pub adam_nodes: Vec<wgpu::BindGroup>,
    pub grad_norm: Vec<wgpu::BindGroup>,
    pub loss_stats: wgpu::BindGroup,
}

impl Workspace {
    pub fn new(gpu: &Gpu, kernels: &Kernels, model: &Model, label: &str, size: WorkspaceSize) -> Result<Self> {
        let n_nodes = u64::from(model.paging.n_nodes);
        let allocated_before = gpu.allocated_bytes();
        let sized = |name: &str, bytes: u64| gpu.storage(&format!("{label} {name}"), bytes);
        let of = |count: u64, record: usize| count * record as u64;
        let ws = |name: &str| format!("{label} {name}");
        let batch = gpu.uniform::<Batch>(&ws("batch"));
        let sampling = gpu.uniform::<Sampling>(&ws("sampling"));
        let loss = gpu.uniform::<LossUniforms>(&ws("loss weights"));
        let cameras = sized("cameras", of(u64::from(size.cameras.max(1)), std::mem::size_of::<GpuCamera>()))?;
        let patches = sized("patches", of(u64::from(size.patches.max(1)), std::mem::size_of::<Patch>()))?;
        let targets = sized("targets", u64::from(size.rays) * 4)?;
        let rays = sized("rays", of(u64::from(size.rays), std::mem::size_of::<Ray>()))?;
        let samples = sized("samples", of(size.samples(), std::mem::size_of::<Sample>()))?;
        let node_counts = sized("node counts", n_nodes * 4)?;
        let node_offsets = sized("node offsets", n_nodes * 4)?;
        let wg_first = sized("node first workgroups", (n_nodes + 1) * 4)?;
        let dispatch_args = gpu.storage_as(
            &ws("field dispatch sizes"),
            u64::from(model.paging.n_pages) * 12,
            wgpu::BufferUsages::INDIRECT,
        )?;
        let active_count = sized("active count", 16)?;
        let active_list = sized("active samples", size.samples() * 4)?;
        let field_out = sized("field outputs", size.samples() * 16)?;
        let outputs = sized("ray outputs", of(size.slots(), std::mem::size_of::<RayOutput>()))?;
        let ray_grads = sized("ray gradients", of(size.slots(), std::mem::size_of::<RayGrad>()))?;
        let losses = sized("ray losses", size.slots() * LOSS_TERMS as u64 * 4)?;
        let word = if size.half { 2 } else { 4 };
        let sample_grads = sized("sample gradients", size.samples() * 4 * word)?;
        let activations = sized("activations", (size.samples() * u64::from(size.act_words) * word).max(16))?;
        let pages = 0..model.paging.n_pages as usize;
        let ray_loss = RayLossBindings {
            batch: &batch,
            loss: &loss,
            rays: &rays,
            outputs: &outputs,
            ray_grads: &ray_grads,
            losses: &losses,
        };
        // the samples pass of the batch, or of the proposal (its own batch uniforms)
        let samples_group = |batch: &wgpu::Buffer| {
            let bindings = SamplesBindings {
                batch,
                sampling: &sampling,
                rays: &rays,
                nodes: &model.nodes,
                occupancy: &model.occupancy,
                occupancy_mean: &model.occupancy_mean,
                samples: &samples,
                node_counts: &node_counts,
            };
            kernels.samples.bind(gpu, &bindings)
        };
        let groups = Groups {
            rays: kernels.rays.bind(
                gpu,
                &RaysBindings { batch: &batch, cameras: &cameras, patches: &patches, targets: &targets, rays: &rays },
            ),
            samples: samples_group(&batch),
            probes: kernels.probes.bind(
                gpu,
                &ProbesBindings { batch: &batch, nodes: &model.nodes, samples: &samples, node_counts: &node_counts },
            ),
            node_scan: kernels.node_scan.bind(
                gpu,
                &NodeScanBindings {
                    scene: &model.scene,
                    node_counts: &node_counts,
                    node_offsets: &node_offsets,
                    wg_first: &wg_first,
                    dispatch_args: &dispatch_args,
                    active_count: &active_count,
                },
            ),
            scatter: kernels.scatter.bind(
                gpu,
                &ScatterBindings {
                    batch: &batch,
                    samples: &samples,
                    node_offsets: &node_offsets,
                    active_list: &active_list,
                },
            ),
            field_forward: pages
                .clone()
                .map(|p| {
                    kernels.field_forward.bind(
                        gpu,
                        &FieldForwardBindings {
                            scene: &model.scene,
                            page: &model.pages[p],
                            rays: &rays,
                            nodes: &model.nodes,
                            samples: &samples,
                            params: &model.params[p],
                            tables: &model.tables[p],
                            active_list: &active_list,
                            node_counts: &node_counts,
                            node_offsets: &node_offsets,
                            wg_first: &wg_first,
                            field_out: &field_out,
                            sanitized: &model.sanitized,
                            activations: &activations,
                        },
                    )
                })
                .collect(),
            render_forward: kernels.render_forward.bind(
                gpu,
                &RenderForwardBindings {
                    batch: &batch,
                    rays: &rays,
                    samples: &samples,
                    field_out: &field_out,
                    outputs: &outputs,
                },
            ),
            loss_mse: kernels.loss_mse.bind(gpu, &ray_loss),
            loss_tv: kernels.loss_tv.bind(gpu, &ray_loss),
            loss_ssim: kernels.loss_ssim.bind(gpu, &ray_loss),
            loss_depth_consistency: kernels.loss_depth_consistency.bind(gpu, &ray_loss),
            loss_sparsity: kernels.loss_sparsity.bind(
                gpu,
                &LossSparsityBindings {
                    batch: &batch,
                    loss: &loss,
                    samples: &samples,
                    field_out: &field_out,
                    sample_grads: &sample_grads,
                    losses: &losses,
                    guard: &model.guard,
                },
            ),
            loss_probes: kernels.loss_probes.bind(
                gpu,
                &LossProbesBindings {
                    batch: &batch,
                    loss: &loss,
                    samples: &samples,
                    field_out: &field_out,
                    sample_grads: &sample_grads,
                    losses: &losses,
                    guard: &model.guard,
                },
            ),
            render_backward: kernels.render_backward.bind(
                gpu,
                &RenderBackwardBindings {
                    batch: &batch,
                    samples: &samples,
                    field_out: &field_out,
                    outputs: &outputs,
                    ray_grads: &ray_grads,
                    sample_grads: &sample_grads,
                    sanitized: &model.sanitized,
                    guard: &model.guard,
                },
            ),
            field_backward: pages
                .map(|p| {
                    kernels.field_backward.bind(
                        gpu,
                        &FieldBackwardBindings {
                            scene: &model.scene,
                            page: &model.pages[p],
                            rays: &rays,
                            nodes: &model.nodes,
                            samples: &samples,
                            params: &model.params[p],
                            tables: &model.tables[p],
                            sample_grads: &sample_grads,
                            active_list: &active_list,
                            node_counts: &node_counts,
                            node_offsets: &node_offsets,
                            wg_first: &wg_first,
                            grads: &model.grads[p],
                            touched: &model.touched[p],
                            activations: &activations,
                        },
                    )
                })
                .collect(),
            adam_nodes: (0..model.paging.n_pages as usize)
                .map(|p| {
                    kernels.adam_nodes.bind(
                        gpu,
                        &AdamNodesBindings {
                            adam: &model.adam,
                            page: &model.pages[p],
                            nodes: &model.nodes,
                            samples: &samples,
                            active_list: &active_list,
                            node_counts: &node_counts,
                            node_offsets: &node_offsets,
                            wg_first: &wg_first,
                            params: &model.params[p],
                            tables: &model.tables[p],
                            m1: &model.m1[p],
                            m2: &model.m2[p],
                            grad_values: &model.grads[p],
                            grads: &model.grads[p],
                            visited: &model.visited[p],
                            guard: &model.guard,
                            sanitized: &model.sanitized,
                        },
                    )
                })
                .collect(),
            grad_norm: (0..model.paging.n_pages as usize)
                .map(|p| {
                    kernels.grad_norm.bind(
                        gpu,
                        &GradNormBindings {
                            page: &model.pages[p],
                            nodes: &model.nodes,
                            samples: &samples,
                            active_list: &active_list,
                            node_counts: &node_counts,
                            node_offsets: &node_offsets,
                            wg_first: &wg_first,
                            grads: &model.grads[p],
                            visited: &model.visited[p],
                            grad_partials: &model.grad_partials,
                            grad_max: &model.grad_max,
                        },
                    )
                })
                .collect(),
            loss_stats: kernels.loss_stats.bind(
                gpu,
                &LossStatsBindings {
                    batch: &batch,
                    loss: &loss,
                    outputs: &outputs,
                    losses: &losses,
                    stats: &model.stats,
                    guard: &model.guard,
                },
            ),
        };
        let proposal = (size.proposal_samples > 0)
            .then(|| -> Result<Proposal> {
                let proposal_batch = gpu.uniform::<Batch>(&ws("proposal batch"));
                let cdf = sized("proposal cdf", u64::from(size.rays) * u64::from(size.proposal_samples + 1) * 4)?;
                Ok(Proposal {
                    samples: samples_group(&proposal_batch),
                    scatter: kernels.scatter.bind(
                        gpu,
                        &ScatterBindings {
                            batch: &proposal_batch,
                            samples: &samples,
                            node_offsets: &node_offsets,
                            active_list: &active_list,
                        },
                    ),
                    cdf_group: kernels.proposal_cdf.bind(
                        gpu,
                        &ProposalCdfBindings {
                            batch: &proposal_batch,
                            sampling: &sampling,
                            samples: &samples,
                            field_out: &field_out,
                            cdf: &cdf,
                            counters: &model.counters,
                        },
                    ),
                    resample: kernels.resample.bind(
                        gpu,
                        &ResampleBindings {
                            batch: &batch,
                            proposal: &proposal_batch,
                            sampling: &sampling,
                            rays: &rays,
                            nodes: &model.nodes,
                            occupancy: &model.occupancy,
                            occupancy_mean: &model.occupancy_mean,
                            cdf: &cdf,
                            samples: &samples,
                            node_counts: &node_counts,
                        },
                    ),
                    batch: proposal_batch,
                    cdf,
                })
            })
            .transpose()?;
        Ok(Self {
            size,
            batch,
            sampling,
            loss,
            cameras,
            patches,
            targets,
            rays,
            samples,
            node_counts,
            node_offsets,
            wg_first,
            dispatch_args,
            active_count,
            active_list,
            field_out,
            outputs,
            ray_grads,
            losses,
            sample_grads,
            activations,
            groups,
            lpips: None,
            adversarial: None,
            proposal,
            bytes: gpu.allocated_bytes().saturating_sub(allocated_before),
        })
    }

    /// Frees the buffers (and their count in `Gpu::allocated_bytes`); the device must be idle and
    /// the workspace unused after.
    pub fn release(&self, gpu: &Gpu) {
        for buffer in [
            &self.batch,
            &self.sampling,
            &self.loss,
            &self.cameras,
            &self.patches,
            &self.targets,
            &self.rays,
            &self.samples,
            &self.node_counts,
            &self.node_offsets,
            &self.wg_first,
            &self.dispatch_args,
            &self.active_count,
            &self.active_list,
            &self.field_out,
            &self.outputs,
            &self.ray_grads,
            &self.losses,
            &self.sample_grads,
            &self.activations,
        ] {
            gpu.free(buffer);
        }
        if let Some(lpips) = &self.lpips {
            lpips.release(gpu);
        }
        if let Some(adversarial) = &self.adversarial {
            adversarial.release(gpu);
        }
        if let Some(proposal) = &self.proposal {
            gpu.free(&proposal.batch);
            gpu.free(&proposal.cdf);
        }
    }

    /// The largest per-sample record: bounds the samples a workspace can hold in one binding.
    pub fn largest_sample_record(config: &crate::config::Config, half: bool) -> u64 {
        let word = if half { 2 } else { 4 };
        (u64::from(config.stored_act_words()) * word).max(std::mem::size_of::<Sample>() as u64)
    }
}
