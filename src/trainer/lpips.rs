//! LPIPS on the training workspace's structure patches (src/lpips.rs describes the network): the
//! activations of a chunk's images, each stage's uniforms and bind groups, and the passes in order:
//! patch_net_input -> (conv | max_pool) per stage -> lpips_head -> (conv_backward | max_pool_backward)
//! per stage in reverse -> loss_patch_net.

use crate::gpu::kernel::Recorder;
use crate::gpu::records::{NetBatch, NetStage, PatchNetUniforms, LOSS_NAMES, NO_TERM};
use crate::gpu::Gpu;
use crate::kernels::{
    ConvBackwardBindings, ConvBindings, Kernels, LossPatchNetBindings, LpipsHeadBindings, PatchNetInputBindings,
};
use crate::lpips::{self, Plan, Stage};
use crate::trainer::workspace::Workspace;
use anyhow::Result;
use std::cell::Cell;

/// LPIPS's buffers for chunks of at most `max_squares` structure patches rendered at the workspace's cuts.
pub struct Lpips {
    pub plan: Plan,
    pub max_squares: u32,
    /// first float of each tensor of `plan` in `acts` (every image's, image after image)
    pub tensor_first: Vec<u32>,
    pub net: wgpu::Buffer,
    pub uniforms: wgpu::Buffer,
    pub acts: wgpu::Buffer,
    pub act_grads: wgpu::Buffer,
    /// per render and position, the head's distance (summed over the layers)
    pub values: wgpu::Buffer,
    stage_uniforms: Vec<wgpu::Buffer>,
    input: wgpu::BindGroup,
    forward: Vec<wgpu::BindGroup>,
    head: wgpu::BindGroup,
    backward: Vec<wgpu::BindGroup>,
    loss: wgpu::BindGroup,
    /// (squares, cuts) of the chunk uploaded last: the dispatch sizes
    chunk: Cell<(u32, u32)>,
}

impl Lpips {
    /// Buffers and bind groups on `ws` (the training workspace) with the network's `weights`.
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        ws: &Workspace,
        weights: &wgpu::Buffer,
        size: u32,
        max_squares: u32,
    ) -> Result<Self> {
        let plan = Plan::new(size)?;
        let cuts = ws.size.cuts;
        let images = max_squares * (cuts + 1);
        let mut tensor_first = Vec::with_capacity(plan.tensors.len());
        let mut at = 0u64;
        for t in &plan.tensors {
            tensor_first.push(u32::try_from(at)?);
            at += u64::from(t.len()) * u64::from(images);
        }
        u32::try_from(at)
            .map_err(|_| anyhow::anyhow!("LPIPS activations of {at} floats: lower train.structure_patches"))?;
        let acts = gpu.storage("lpips activations", at * 4)?;
        let act_grads = gpu.storage("lpips gradients", at * 4)?;
        let values = gpu.storage("lpips values", u64::from(max_squares * cuts * plan.positions()).max(1) * 4)?;
        let net = gpu.uniform::<NetBatch>("lpips batch");
        let uniforms = gpu.uniform::<PatchNetUniforms>("lpips");
        let offsets = lpips::weight_offsets();
        let feature_tensors = plan.features;
        let stage_uniforms: Vec<wgpu::Buffer> = plan
            .stages
            .iter()
            .map(|stage| {
                let (input, output) = match *stage {
                    Stage::Conv { input, output, .. } | Stage::Pool { input, output } => (input, output),
                };
                let (i, o) = (plan.tensors[input], plan.tensors[output]);
                let mut record = NetStage {
                    input: tensor_first[input],
                    output: tensor_first[output],
                    in_channels: i.channels,
                    out_channels: o.channels,
                    in_size: i.size,
                    out_size: o.size,
                    kernel: lpips::POOL_KERNEL,
                    stride: lpips::POOL_STRIDE,
                    accumulate: u32::from(feature_tensors.contains(&input)),
                    relu: 1,
                    ..Default::default()
                };
                if let Stage::Conv { conv, .. } = *stage {
                    let c = lpips::CONVS[conv];
                    (record.kernel, record.stride, record.pad) = (c.kernel, c.stride, c.pad);
                    (record.weights, record.bias) = (offsets.weight[conv], offsets.bias[conv]);
                }
                gpu.uniform_init("lpips stage", &record)
            })
            .collect();
        // each stage's pass has its own layout (equal to the others', but wgpu does not promise
        // that such layouts are interchangeable)
        let forward = plan
            .stages
            .iter()
            .zip(&stage_uniforms)
            .map(|(kind, stage)| {
                let b = ConvBindings { net: &net, stage, weights, acts: &acts };
                match kind {
                    Stage::Conv { .. } => kernels.conv.bind(gpu, &b),
                    Stage::Pool { .. } => kernels.max_pool.bind(gpu, &b),
                }
            })
            .collect();
        let backward = plan
            .stages
            .iter()
            .zip(&stage_uniforms)
            .map(|(kind, stage)| {
                let b = ConvBackwardBindings { net: &net, stage, weights, acts: &acts, act_grads: &act_grads };
                match kind {
                    Stage::Conv { .. } => kernels.conv_backward.bind(gpu, &b),
                    Stage::Pool { .. } => kernels.max_pool_backward.bind(gpu, &b),
                }
            })
            .collect();
        let head = kernels.lpips_head.bind(
            gpu,
            &LpipsHeadBindings { lpips: &uniforms, weights, acts: &acts, act_grads: &act_grads, values: &values },
        );
        let (input, loss) = patch_net_groups(gpu, kernels, ws, &uniforms, &acts, &act_grads, &values);
        Ok(Self {
            plan,
            max_squares,
            tensor_first,
            net,
            uniforms,
            acts,
            act_grads,
            values,
            stage_uniforms,
            input,
            forward,
            head,
            backward,
            loss,
            chunk: Cell::new((0, 0)),
        })
    }

    /// The uniforms of a chunk of `squares` structure patches rendered at `cuts` cuts.
    pub fn uniforms(&self, squares: u32, cuts: u32) -> (NetBatch, PatchNetUniforms) {
        let offsets = lpips::weight_offsets();
        let mut features = [[0u32; 4]; 5];
        for (k, &t) in self.plan.features.iter().enumerate() {
            let tensor = self.plan.tensors[t];
            features[k] = [self.tensor_first[t], tensor.channels, tensor.size, offsets.head[k]];
        }
        let [sx, sy, sz] = lpips::SHIFT;
        let [cx, cy, cz] = lpips::SCALE;
        let net = NetBatch { images: squares * (cuts + 1), backward_images: squares * cuts, ..Default::default() };
        let uniforms = PatchNetUniforms {
            squares,
            n_cuts: cuts,
            size: self.plan.size,
            positions: self.plan.positions(),
            features,
            shift: [sx, sy, sz, 0.0],
            scale: [cx, cy, cz, 1.0],
            term: term_index("lpips"),
            second_term: NO_TERM,
            images: squares * (cuts + 1),
            _pad0: 0,
        };
        (net, uniforms)
    }

    /// Writes the uniforms of the chunk about to run: `squares` structure patches (at most
    /// `max_squares`) at `cuts` cuts.
    pub fn upload(&self, gpu: &Gpu, squares: u32, cuts: u32) {
        let squares = squares.min(self.max_squares);
        let (net, uniforms) = self.uniforms(squares, cuts);
        gpu.write(&self.net, &[net]);
        gpu.write(&self.uniforms, &[uniforms]);
        self.chunk.set((squares, cuts));
    }

    /// Every LPIPS pass of the uploaded chunk, over `slots` slots (nothing without structure patches).
    pub fn record(&self, rec: &mut Recorder, kernels: &Kernels, slots: u32) {
        let (squares, cuts) = self.chunk.get();
        if squares == 0 {
            return;
        }
        let images = squares * (cuts + 1);
        let renders = squares * cuts;
        let plan = &self.plan;
        rec.dispatch(&kernels.patch_net_input, &self.input, images * plan.tensors[0].len());
        for (stage, group) in plan.stages.iter().zip(&self.forward) {
            match *stage {
                Stage::Conv { output, .. } => rec.dispatch(&kernels.conv, group, images * plan.tensors[output].len()),
                Stage::Pool { output, .. } => {
                    rec.dispatch(&kernels.max_pool, group, images * plan.tensors[output].len())
                }
            }
        }
        rec.dispatch(&kernels.lpips_head, &self.head, renders * plan.positions());
        for (stage, group) in plan.stages.iter().zip(&self.backward).rev() {
            match *stage {
                Stage::Conv { input, .. } => {
                    rec.dispatch(&kernels.conv_backward, group, renders * plan.tensors[input].len())
                }
                Stage::Pool { input, .. } => {
                    rec.dispatch(&kernels.max_pool_backward, group, renders * plan.tensors[input].len())
                }
            }
        }
        rec.dispatch(&kernels.loss_patch_net, &self.loss, slots);
    }

    /// Frees the buffers (the device idle).
    pub fn release(&self, gpu: &Gpu) {
        for buffer in [&self.net, &self.uniforms, &self.acts, &self.act_grads, &self.values] {
            gpu.free(buffer);
        }
        for buffer in &self.stage_uniforms {
            gpu.free(buffer);
        }
    }
}

/// Row of loss term `name` among `LOSS_NAMES`.
pub fn term_index(name: &str) -> u32 {
    LOSS_NAMES.iter().position(|&n| n == name).expect("a loss term") as u32
}

/// The bind groups of a network's first and last passes on the workspace `ws`: patch_net_input
/// into `acts`, and loss_patch_net from the input's gradient in `act_grads` and the `values`.
pub fn patch_net_groups(
    gpu: &Gpu,
    kernels: &Kernels,
    ws: &Workspace,
    uniforms: &wgpu::Buffer,
    acts: &wgpu::Buffer,
    act_grads: &wgpu::Buffer,
    values: &wgpu::Buffer,
) -> (wgpu::BindGroup, wgpu::BindGroup) {
    let input = kernels.patch_net_input.bind(
        gpu,
        &PatchNetInputBindings {
            batch: &ws.batch,
            loss: &ws.loss,
            net: uniforms,
            rays: &ws.rays,
            outputs: &ws.outputs,
            acts,
        },
    );
    let loss = kernels.loss_patch_net.bind(
        gpu,
        &LossPatchNetBindings {
            batch: &ws.batch,
            loss: &ws.loss,
            net: uniforms,
            rays: &ws.rays,
            act_grads,
            values,
            ray_grads: &ws.ray_grads,
            losses: &ws.losses,
        },
    );
    (input, loss)
}
