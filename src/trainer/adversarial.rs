//! The adversarial term on the training workspace's structure patches (src/adversarial.rs
//! describes the discriminator). Per chunk with structure patches: patch_net_input -> conv x 3 ->
//! discriminator_loss -> the generator's backward to the renders (conv_backward x 3) -> the
//! discriminator's weight gradients (conv_weights_backward, conv_backward between them) ->
//! loss_patch_net (the field's gradient and both losses) -> adam_dense (the discriminator's update,
//! after the field's gradient was taken from the discriminator as it was).

use crate::adversarial::{self, CONVS};
use crate::gpu::kernel::Recorder;
use crate::gpu::records::{DenseAdam, NetBatch, NetStage, PatchNetUniforms};
use crate::gpu::Gpu;
use crate::kernels::{
    AdamDenseBindings, ConvBackwardBindings, ConvBindings, ConvWeightsBackwardBindings, DiscriminatorLossBindings,
    Kernels,
};
use crate::trainer::lpips::{patch_net_groups, term_index};
use crate::trainer::workspace::Workspace;
use anyhow::Result;
use std::cell::Cell;

/// The discriminator's parameters, Adam moments and gradient (they outlive the workspaces).
pub struct DiscriminatorParams {
    pub params: wgpu::Buffer,
    pub m1: wgpu::Buffer,
    pub m2: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub settings: wgpu::Buffer,
    pub count: u32,
    adam: wgpu::BindGroup,
    /// updates so far (Adam's bias correction)
    pub updates: Cell<u32>,
}

impl DiscriminatorParams {
    pub fn new(gpu: &Gpu, kernels: &Kernels, seed: u64) -> Result<Self> {
        let values = adversarial::init(seed);
        let bytes = values.len() as u64 * 4;
        let params = gpu.storage_init("discriminator", bytemuck::cast_slice(&values))?;
        let m1 = gpu.storage("discriminator m1", bytes)?;
        let m2 = gpu.storage("discriminator m2", bytes)?;
        let grads = gpu.storage("discriminator gradients", bytes)?;
        let settings = gpu.uniform::<DenseAdam>("discriminator adam");
        let adam = kernels
            .adam_dense
            .bind(gpu, &AdamDenseBindings { settings: &settings, params: &params, grads: &grads, m1: &m1, m2: &m2 });
        Ok(Self { params, m1, m2, grads, settings, count: values.len() as u32, adam, updates: Cell::new(0) })
    }

    /// Adam's settings for the next update at learning rate `lr`.
    pub fn next_update(&self, lr: f32) -> DenseAdam {
        let t = self.updates.get() + 1;
        let (b1, b2) = adversarial::BETAS;
        DenseAdam {
            lr,
            beta1: b1,
            beta2: b2,
            epsilon: 1e-8,
            correction1: 1.0 - b1.powi(t as i32),
            correction2: 1.0 - b2.powi(t as i32),
            count: self.count,
            _pad0: 0,
        }
    }
}

/// The discriminator's activations and passes for chunks of at most `max_squares` structure
/// patches of `size` pixels at the workspace's cuts.
pub struct Adversarial {
    pub size: u32,
    pub max_squares: u32,
    /// first float of each tensor (input, two hidden, logits) in `acts`
    pub tensor_first: [u32; 4],
    pub uniforms: wgpu::Buffer,
    pub gen_net: wgpu::Buffer,
    pub disc_net: wgpu::Buffer,
    pub acts: wgpu::Buffer,
    pub gen_grads: wgpu::Buffer,
    pub disc_grads: wgpu::Buffer,
    pub values: wgpu::Buffer,
    stages: Vec<wgpu::Buffer>,
    input: wgpu::BindGroup,
    forward: Vec<wgpu::BindGroup>,
    loss_logits: wgpu::BindGroup,
    gen_backward: Vec<wgpu::BindGroup>,
    disc_backward: Vec<wgpu::BindGroup>,
    weights_backward: Vec<wgpu::BindGroup>,
    loss: wgpu::BindGroup,
    chunk: Cell<(u32, u32)>,
}

impl Adversarial {
    pub fn new(
        gpu: &Gpu,
        kernels: &Kernels,
        ws: &Workspace,
        disc: &DiscriminatorParams,
        size: u32,
        max_squares: u32,
    ) -> Result<Self> {
        let cuts = ws.size.cuts;
        let images = max_squares * (cuts + 1);
        let edges = adversarial::sizes(size);
        let channels = [3, CONVS[0].out_channels, CONVS[1].out_channels, CONVS[2].out_channels];
        let mut tensor_first = [0u32; 4];
        let mut at = 0u64;
        for k in 0..4 {
            tensor_first[k] = u32::try_from(at)?;
            at += u64::from(channels[k] * edges[k] * edges[k]) * u64::from(images);
        }
        let acts = gpu.storage("discriminator activations", at * 4)?;
        let gen_grads = gpu.storage("generator gradients", at * 4)?;
        let disc_grads = gpu.storage("discriminator activation gradients", at * 4)?;
        let values = gpu.storage("discriminator values", 2 * u64::from(images * edges[3] * edges[3]) * 4)?;
        let uniforms = gpu.uniform::<PatchNetUniforms>("discriminator");
        let gen_net = gpu.uniform::<NetBatch>("discriminator batch (generator)");
        let disc_net = gpu.uniform::<NetBatch>("discriminator batch");
        let (weight, bias, _) = adversarial::offsets();
        let stages: Vec<wgpu::Buffer> = CONVS
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let record = NetStage {
                    input: tensor_first[k],
                    output: tensor_first[k + 1],
                    in_channels: c.in_channels,
                    out_channels: c.out_channels,
                    in_size: edges[k],
                    out_size: edges[k + 1],
                    kernel: c.kernel,
                    stride: c.stride,
                    pad: c.pad,
                    weights: weight[k],
                    bias: bias[k],
                    accumulate: 0,
                    relu: u32::from(k + 1 < CONVS.len()),
                    ..Default::default()
                };
                gpu.uniform_init("discriminator stage", &record)
            })
            .collect();
        let weights = &disc.params;
        let forward = stages
            .iter()
            .map(|stage| kernels.conv.bind(gpu, &ConvBindings { net: &disc_net, stage, weights, acts: &acts }))
            .collect();
        let backward = |net: &wgpu::Buffer, act_grads: &wgpu::Buffer| -> Vec<wgpu::BindGroup> {
            stages
                .iter()
                .map(|stage| {
                    kernels
                        .conv_backward
                        .bind(gpu, &ConvBackwardBindings { net, stage, weights, acts: &acts, act_grads })
                })
                .collect()
        };
        let gen_backward = backward(&gen_net, &gen_grads);
        let disc_backward = backward(&disc_net, &disc_grads);
        let weights_backward = stages
            .iter()
            .map(|stage| {
                kernels.conv_weights_backward.bind(
                    gpu,
                    &ConvWeightsBackwardBindings {
                        net: &disc_net,
                        stage,
                        acts: &acts,
                        act_grads: &disc_grads,
                        grads: &disc.grads,
                    },
                )
            })
            .collect();
        let (input, loss) = patch_net_groups(gpu, kernels, ws, &uniforms, &acts, &gen_grads, &values);
        let loss_logits = kernels.discriminator_loss.bind(
            gpu,
            &DiscriminatorLossBindings {
                net: &uniforms,
                acts: &acts,
                gen_grads: &gen_grads,
                disc_grads: &disc_grads,
                values: &values,
            },
        );
        Ok(Self {
            size,
            max_squares,
            tensor_first,
            uniforms,
            gen_net,
            disc_net,
            acts,
            gen_grads,
            disc_grads,
            values,
            stages,
            input,
            forward,
            loss_logits,
            gen_backward,
            disc_backward,
            weights_backward,
            loss,
            chunk: Cell::new((0, 0)),
        })
    }

    /// The uniforms of a chunk of `squares` structure patches at `cuts` cuts: the network's, and the
    /// generator's and the discriminator's batches (renders backward; every image backward).
    pub fn uniforms(&self, squares: u32, cuts: u32) -> (PatchNetUniforms, NetBatch, NetBatch) {
        let edges = adversarial::sizes(self.size);
        let images = squares * (cuts + 1);
        let mut features = [[0u32; 4]; 5];
        features[0] = [self.tensor_first[3], 1, edges[3], 0];
        let net = PatchNetUniforms {
            squares,
            n_cuts: cuts,
            size: self.size,
            positions: edges[3] * edges[3],
            features,
            shift: [0.0; 4],
            scale: [1.0; 4],
            term: term_index("adversarial"),
            second_term: term_index("discriminator"),
            images,
            _pad0: 0,
        };
        let gen = NetBatch { images, backward_images: squares * cuts, ..Default::default() };
        let disc = NetBatch { images, backward_images: images, ..Default::default() };
        (net, gen, disc)
    }

    /// Writes the uniforms of the chunk about to run.
    pub fn upload(&self, gpu: &Gpu, squares: u32, cuts: u32) {
        let squares = squares.min(self.max_squares);
        let (net, gen, disc) = self.uniforms(squares, cuts);
        gpu.write(&self.uniforms, &[net]);
        gpu.write(&self.gen_net, &[gen]);
        gpu.write(&self.disc_net, &[disc]);
        self.chunk.set((squares, cuts));
    }

    /// The chunk's passes over `slots` slots, then the discriminator's update (its Adam settings
    /// written by the caller); nothing without structure patches.
    pub fn record(&self, rec: &mut Recorder, kernels: &Kernels, disc: &DiscriminatorParams, slots: u32) {
        let (squares, cuts) = self.chunk.get();
        if squares == 0 {
            return;
        }
        let edges = adversarial::sizes(self.size);
        let channels = [3, CONVS[0].out_channels, CONVS[1].out_channels, CONVS[2].out_channels];
        let len = |k: usize| channels[k] * edges[k] * edges[k];
        let (images, renders) = (squares * (cuts + 1), squares * cuts);
        rec.dispatch(&kernels.patch_net_input, &self.input, images * len(0));
        for (k, group) in self.forward.iter().enumerate() {
            rec.dispatch(&kernels.conv, group, images * len(k + 1));
        }
        rec.dispatch(&kernels.discriminator_loss, &self.loss_logits, images * len(3));
        // the generator's gradient, to the renders' colours
        for k in (0..CONVS.len()).rev() {
            rec.dispatch(&kernels.conv_backward, &self.gen_backward[k], renders * len(k));
        }
        // the discriminator's, to its weights (no input gradient needed)
        for k in (0..CONVS.len()).rev() {
            let c = CONVS[k];
            let n = c.weights() as u32 + c.out_channels;
            rec.dispatch(&kernels.conv_weights_backward, &self.weights_backward[k], n);
            if k > 0 {
                rec.dispatch(&kernels.conv_backward, &self.disc_backward[k], images * len(k));
            }
        }
        rec.dispatch(&kernels.loss_patch_net, &self.loss, slots);
        rec.dispatch(&kernels.adam_dense, &disc.adam, disc.count);
    }

    pub fn release(&self, gpu: &Gpu) {
        for buffer in
            [&self.uniforms, &self.gen_net, &self.disc_net, &self.acts, &self.gen_grads, &self.disc_grads, &self.values]
        {
            gpu.free(buffer);
        }
        for buffer in &self.stages {
            gpu.free(buffer);
        }
    }
}
