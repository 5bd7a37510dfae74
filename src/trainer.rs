//! The training step as a sequence of WGSL passes, and rendering of whole views with the same passes.
//!
//! rays -> samples (octree level per sample) -> field forward -> render (+ MSE and its gradient per
//! sample) -> field backward (gradients) -> Adam. One submit per step; the host reads back only the
//! small loss-statistics buffer, every `log_every` steps.

use crate::config::Config;
use crate::data::{pyramid, Camera, Dataset, Image};
use crate::field::{FieldLayout, SplitMix64};
use crate::gpu::records::{Frame, GpuCamera, Patch, Ray, RayResult, Sample};
use crate::gpu::shader::{KernelShape, Pass, ADAM_RUN};
use crate::gpu::{dispatch_size, Gpu};
use crate::octree::Octree;
use anyhow::{bail, Result};
use std::sync::Arc;

/// Compiled passes of one kernel shape.
pub struct Pipelines {
    pub rays: wgpu::ComputePipeline,
    pub samples: wgpu::ComputePipeline,
    pub field_forward: wgpu::ComputePipeline,
    pub render: wgpu::ComputePipeline,
    pub field_backward: wgpu::ComputePipeline,
    pub adam: wgpu::ComputePipeline,
    pub loss_stats: wgpu::ComputePipeline,
    pub occupancy: wgpu::ComputePipeline,
    pub occupancy_mean: wgpu::ComputePipeline,
    pub node_lists: wgpu::ComputePipeline,
    pub scatter_samples: wgpu::ComputePipeline,
    pub decoders: wgpu::ComputePipeline,
}

impl Pipelines {
    pub fn new(gpu: &Gpu, shape: &KernelShape) -> Result<Self> {
        let build = |pass: Pass| gpu.compute_pipeline(pass.name(), &shape.source(pass));
        Ok(Self {
            rays: build(Pass::Rays)?,
            samples: build(Pass::Samples)?,
            field_forward: build(Pass::FieldForward)?,
            render: build(Pass::Render)?,
            field_backward: build(Pass::FieldBackward)?,
            adam: build(Pass::Adam)?,
            loss_stats: build(Pass::LossStats)?,
            occupancy: build(Pass::Occupancy)?,
            occupancy_mean: build(Pass::OccupancyMean)?,
            node_lists: build(Pass::NodeLists)?,
            scatter_samples: build(Pass::ScatterSamples)?,
            decoders: build(Pass::Decoders)?,
        })
    }
}

/// Every device buffer of the trainer; public so tests can set inputs and read single passes.
pub struct Buffers {
    pub frame: wgpu::Buffer,
    pub cameras: wgpu::Buffer,
    pub patches: wgpu::Buffer,
    pub image_offsets: wgpu::Buffer,
    pub pixels: wgpu::Buffer,
    pub nodes: wgpu::Buffer,
    pub rays: wgpu::Buffer,
    pub samples: wgpu::Buffer,
    pub field_out: wgpu::Buffer,
    pub results: wgpu::Buffer,
    pub sample_grads: wgpu::Buffer,
    pub params: wgpu::Buffer,
    pub moments: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub stats: wgpu::Buffer,
    pub occupancy: wgpu::Buffer,
    pub occupancy_mean: wgpu::Buffer,
    /// Indices of the samples the field evaluates, sorted by node, and their count.
    pub active_list: wgpu::Buffer,
    pub active_count: wgpu::Buffer,
    /// Active samples per node.
    pub node_counts: wgpu::Buffer,
    /// Per node: the field passes' indirect dispatch sizes, forward then backward.
    pub dispatch_args: wgpu::Buffer,
    /// Per node, `KernelShape::decoder_stride` bytes: where its samples are in `active_list` and a
    /// copy of its decoder parameters, bound as a uniform block by the field passes.
    pub decoders: wgpu::Buffer,
    /// The occupancy grid's cells sorted by update phase then node, and per (phase, node) the range.
    pub occ_cells: wgpu::Buffer,
    pub occ_ranges: wgpu::Buffer,
}

pub struct BindGroups {
    pub rays: wgpu::BindGroup,
    pub samples: wgpu::BindGroup,
    pub node_lists: wgpu::BindGroup,
    pub scatter_samples: wgpu::BindGroup,
    pub decoders: wgpu::BindGroup,
    /// One per node (its decoder block bound).
    pub field_forward: Vec<wgpu::BindGroup>,
    pub render: wgpu::BindGroup,
    pub field_backward: Vec<wgpu::BindGroup>,
    pub adam: wgpu::BindGroup,
    pub loss_stats: wgpu::BindGroup,
    pub occupancy: Vec<wgpu::BindGroup>,
    pub occupancy_mean: wgpu::BindGroup,
}

/// Size of one training view at each pyramid level.
#[derive(Clone, Debug)]
struct ViewLevels {
    sizes: Vec<(u32, u32)>,
}

/// Loss statistics read back from the device.
#[derive(Clone, Copy, Debug)]
pub struct LossStats {
    /// Mean squared error per channel, averaged over the steps since the last read.
    pub mse: f64,
    pub steps: u32,
    /// Samples per step the field evaluated (the rest were skipped as empty space).
    pub active_samples: f64,
}

/// A rendered view.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub rgb: Image,
    pub depth: Vec<f32>,
    pub opacity: Vec<f32>,
}

pub struct Trainer {
    pub gpu: Arc<Gpu>,
    pub config: Config,
    pub layout: FieldLayout,
    pub shape: KernelShape,
    pub octree: Octree,
    pub pipelines: Pipelines,
    pub buffers: Buffers,
    pub bind_groups: BindGroups,
    /// Rays the buffers hold: one batch of patches.
    pub max_rays: u32,
    pub step: u32,
    pub n_params: u32,
    pyramid_levels: u32,
    views: Vec<ViewLevels>,
    rng: SplitMix64,
    /// Per (phase, node): occupancy cells of that phase in that node.
    occ_counts: Vec<u32>,
}

impl Trainer {
    /// A fresh field on an octree built from the training cameras.
    pub fn new(gpu: Arc<Gpu>, config: Config, dataset: &Dataset) -> Result<Self> {
        let cameras: Vec<Camera> = dataset.train.iter().map(|v| v.camera).collect();
        let octree = Octree::build(&cameras, config.field.max_depth, config.field.finest_resolution);
        Self::with_octree(gpu, config, dataset, octree)
    }

    pub fn with_octree(gpu: Arc<Gpu>, config: Config, dataset: &Dataset, octree: Octree) -> Result<Self> {
        if dataset.train.is_empty() {
            bail!("the dataset has no training views");
        }
        let layout = FieldLayout::new(&config.field);
        let shape = KernelShape::new(layout.clone(), gpu.float_atomics, gpu.limits.max_compute_workgroup_storage_size);
        let cameras: Vec<Camera> = dataset.train.iter().map(|v| v.camera).collect();
        let pipelines = Pipelines::new(&gpu, &shape)?;

        // The image pyramid of every training view, packed as RGBA8.
        let min_side = dataset.train.iter().map(|v| v.image.width.min(v.image.height)).min().unwrap_or(1);
        let pyramid_levels = config.data.pyramid_levels.min(32 - min_side.leading_zeros()).max(1);
        let mut pixels: Vec<u32> = Vec::new();
        let mut offsets = Vec::new();
        let mut views = Vec::new();
        for view in &dataset.train {
            let levels = pyramid(&view.image, pyramid_levels as usize);
            let mut sizes = Vec::new();
            for level in &levels {
                offsets.push(pixels.len() as u32);
                sizes.push((level.width, level.height));
                let alpha = |i: usize| level.alpha.get(i).copied().unwrap_or(1.0);
                pixels.extend(level.rgb.chunks_exact(3).enumerate().map(|(i, rgb)| pack_rgba8(rgb, alpha(i))));
            }
            views.push(ViewLevels { sizes });
        }
        let gpu_cameras: Vec<GpuCamera> = cameras.iter().map(GpuCamera::from).collect();

        let max_rays = config.train.patches_per_batch * config.train.patch_size * config.train.patch_size;
        let n_samples = u64::from(max_rays) * u64::from(config.train.samples_per_ray);
        let n_nodes = octree.nodes.len() as u64;
        let n_params = n_nodes * u64::from(layout.node_params);
        if n_params > u64::from(u32::MAX / 2) {
            bail!("the field has {n_params} parameters, too many: lower field.log2_table_size or field.max_depth");
        }
        let decoder_stride = u64::from(shape.decoder_stride());
        if decoder_stride > gpu.limits.max_uniform_buffer_binding_size {
            bail!(
                "one node's decoders take {decoder_stride} bytes, more than this adapter binds as a uniform block \
                 ({}): lower field.hidden_width",
                gpu.limits.max_uniform_buffer_binding_size
            );
        }
        let params = layout.init_params(octree.nodes.len(), config.train.seed);
        let (mut occ_cells, occ_ranges) = occupancy_cells_by_node(&octree, config.train.occupancy_resolution);
        occ_cells.resize(occ_cells.len().max(1), 0);
        let size_of = |n: u64, record: usize| n * record as u64;
        let buffers = Buffers {
            frame: gpu.uniform::<Frame>("frame"),
            cameras: gpu.storage_init("cameras", bytemuck::cast_slice(&gpu_cameras))?,
            patches: gpu.storage("patches", size_of(u64::from(config.train.patches_per_batch), 16))?,
            image_offsets: gpu.storage_init("image offsets", bytemuck::cast_slice(&offsets))?,
            pixels: gpu.storage_init("training pixels", bytemuck::cast_slice(&pixels))?,
            nodes: gpu.storage_init("octree nodes", bytemuck::cast_slice(&octree.nodes))?,
            rays: gpu.storage("rays", size_of(u64::from(max_rays), std::mem::size_of::<Ray>()))?,
            samples: gpu.storage("samples", size_of(n_samples, std::mem::size_of::<Sample>()))?,
            field_out: gpu.storage("field outputs", size_of(n_samples, 16))?,
            results: gpu.storage("ray results", size_of(u64::from(max_rays), std::mem::size_of::<RayResult>()))?,
            sample_grads: gpu.storage("sample gradients", size_of(n_samples, 16))?,
            params: gpu.storage_init("parameters", bytemuck::cast_slice(&params))?,
            moments: gpu.storage("adam moments", size_of(n_params, 8))?,
            grads: gpu.storage("gradients", size_of(n_params, 4))?,
            stats: gpu.storage("loss statistics", 16)?,
            occupancy: gpu.storage("occupancy grid", u64::from(config.train.occupancy_resolution.max(1)).pow(3) * 4)?,
            occupancy_mean: gpu.storage("occupancy mean", 16)?,
            active_list: gpu.storage("active samples", n_samples * 4)?,
            active_count: gpu.storage("active sample count", 16)?,
            node_counts: gpu.storage("active samples per node", n_nodes * 4)?,
            dispatch_args: gpu.storage_as("field dispatch sizes", n_nodes * 24, wgpu::BufferUsages::INDIRECT)?,
            decoders: gpu.storage_as("decoder blocks", n_nodes * decoder_stride, wgpu::BufferUsages::UNIFORM)?,
            occ_cells: gpu.storage_init("occupancy cells by node", bytemuck::cast_slice(&occ_cells))?,
            occ_ranges: gpu.storage_init("occupancy cell ranges", bytemuck::cast_slice(&occ_ranges))?,
        };
        let occ_counts = occ_ranges.iter().map(|r| r[1]).collect();
        let bind_groups = bind_all(&gpu, &pipelines, &buffers, n_nodes as u32, decoder_stride);
        let rng = SplitMix64(config.train.seed);
        Ok(Self {
            gpu,
            layout,
            shape,
            octree,
            pipelines,
            buffers,
            bind_groups,
            max_rays,
            step: 0,
            n_params: n_params as u32,
            pyramid_levels,
            views,
            rng,
            occ_counts,
            config,
        })
    }

    /// Learning-rate multiplier at `step`: exponential decay from lr_decay_start over lr_decay_steps
    /// down to lr_final_ratio (never compounding), floored at 0.01.
    pub fn lr_factor(&self, step: u32) -> f32 {
        let t = &self.config.train;
        let progress = (step.saturating_sub(t.lr_decay_start) as f32 / t.lr_decay_steps.max(1) as f32).min(1.0);
        t.lr_final_ratio.powf(progress).max(0.01)
    }

    /// The uniforms of a training step.
    pub fn training_frame(&self, step: u32, valid_rays: u32) -> Frame {
        let t = &self.config.train;
        let k = f64::from(step + 1);
        let lr = self.lr_factor(step);
        Frame {
            n_rays: self.max_rays,
            samples_per_ray: t.samples_per_ray,
            step,
            seed: step_seed(t.seed, step),
            cut: self.config.field.max_depth,
            training: 1,
            patch_size: t.patch_size,
            pyramid_levels: self.pyramid_levels,
            background: self.config.data.background,
            inv_count: 1.0 / (3.0 * valid_rays.max(1) as f32),
            lr_hash: t.lr_hash * lr,
            lr_mlp: t.lr_mlp * lr,
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_eps,
            bias1: (1.0 - f64::from(t.adam_beta1).powf(k)) as f32,
            bias2: (1.0 - f64::from(t.adam_beta2).powf(k)) as f32,
            n_params: self.n_params,
            max_density: self.config.field.max_density,
            ray_offset: 0,
            view: 0,
            occ_resolution: t.occupancy_resolution.max(1),
            occ_threshold: t.occupancy_threshold,
            occ_decay: t.occupancy_decay,
            occ_skip: u32::from(t.occupancy_resolution > 0 && step >= t.occupancy_warmup),
            random_background: u32::from(self.config.data.random_background),
            occ_phase: self.occupancy_phase(step),
            n_nodes: self.octree.nodes.len() as u32,
            occ_explore: t.occupancy_explore,
            _pad: 0,
        }
    }

    /// Draws the step's patches: mostly full resolution, `coarse_fraction` from the coarser levels.
    pub fn draw_patches(&mut self) -> (Vec<Patch>, u32) {
        let t = &self.config.train;
        let p = t.patch_size;
        let mut valid = 0;
        let patches = (0..t.patches_per_batch)
            .map(|_| {
                let view = self.rng.below(self.views.len() as u32);
                let coarse = self.pyramid_levels > 1 && self.rng.next_f32() < self.config.data.coarse_fraction;
                let level = if coarse { 1 + self.rng.below(self.pyramid_levels - 1) } else { 0 };
                let (w, h) = self.views[view as usize].sizes[level as usize];
                let x0 = self.rng.below(w.saturating_sub(p) + 1);
                let y0 = self.rng.below(h.saturating_sub(p) + 1);
                valid += p.min(w - x0) * p.min(h - y0);
                Patch { view, level, x0, y0 }
            })
            .collect();
        (patches, valid)
    }

    /// Draws the patches of step `step` and uploads them with the step's uniforms.
    pub fn prepare_step(&mut self, step: u32) -> (Frame, Vec<Patch>) {
        let (patches, valid) = self.draw_patches();
        let frame = self.training_frame(step, valid);
        self.gpu.write(&self.buffers.patches, &patches);
        self.gpu.write(&self.buffers.frame, &[frame]);
        (frame, patches)
    }

    /// One training step: uploads the patch list and uniforms, records every pass, submits.
    pub fn step(&mut self) -> Result<()> {
        self.prepare_step(self.step);
        let mut encoder =
            self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("train step") });
        if self.occupancy_due(self.step) {
            self.encode_decoders(&mut encoder);
            self.encode_occupancy(&mut encoder, self.occupancy_phase(self.step));
        }
        self.encode_forward(&mut encoder, self.max_rays, true);
        self.encode_backward(&mut encoder);
        self.gpu.queue.submit([encoder.finish()]);
        self.step += 1;
        Ok(())
    }

    /// rays -> samples -> field forward -> render (with the loss gradient when training).
    pub fn encode_forward(&self, encoder: &mut wgpu::CommandEncoder, n_rays: u32, training: bool) {
        let n_samples = n_rays * self.config.train.samples_per_ray;
        let p = &self.pipelines;
        let b = &self.bind_groups;
        dispatch(encoder, "rays", &p.rays, &b.rays, n_rays, 64);
        self.encode_samples(encoder, n_samples);
        self.encode_field_forward(encoder);
        dispatch(encoder, "render", &p.render, &b.render, n_rays, 64);
        if training {
            dispatch(encoder, "loss statistics", &p.loss_stats, &b.loss_stats, 256, 256);
        }
    }

    /// The samples pass, then the node-sorted list of active samples and the decoder blocks that the
    /// field passes read.
    pub fn encode_samples(&self, encoder: &mut wgpu::CommandEncoder, n_samples: u32) {
        let (p, b) = (&self.pipelines, &self.bind_groups);
        encoder.clear_buffer(&self.buffers.node_counts, 0, None);
        dispatch(encoder, "samples", &p.samples, &b.samples, n_samples, 64);
        dispatch(encoder, "node lists", &p.node_lists, &b.node_lists, 1, 1);
        dispatch(encoder, "scatter samples", &p.scatter_samples, &b.scatter_samples, n_samples, 64);
        self.encode_decoders(encoder);
    }

    /// Copies the decoder parameters into the nodes' uniform blocks (after any change of them).
    pub fn encode_decoders(&self, encoder: &mut wgpu::CommandEncoder) {
        let decoder_params = self.octree.nodes.len() as u32 * self.layout.mlp_params();
        dispatch(encoder, "decoders", &self.pipelines.decoders, &self.bind_groups.decoders, decoder_params, 64);
    }

    /// The field forward over the active samples: one indirect dispatch per node.
    pub fn encode_field_forward(&self, encoder: &mut wgpu::CommandEncoder) {
        self.encode_per_node(
            encoder,
            "field forward",
            &self.pipelines.field_forward,
            &self.bind_groups.field_forward,
            0,
        );
    }

    /// The field backward over the active samples: one indirect dispatch per node.
    pub fn encode_field_backward(&self, encoder: &mut wgpu::CommandEncoder) {
        let (p, b) = (&self.pipelines, &self.bind_groups);
        self.encode_per_node(encoder, "field backward", &p.field_backward, &b.field_backward, 12);
    }

    fn encode_per_node(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        groups: &[wgpu::BindGroup],
        args_offset: u64,
    ) {
        let mut pass =
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
        pass.set_pipeline(pipeline);
        for (node, group) in groups.iter().enumerate() {
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups_indirect(&self.buffers.dispatch_args, node as u64 * 24 + args_offset);
        }
    }

    /// Whether the occupancy grid is refreshed before step `step`.
    /// Every step during the warm-up (while no sample is skipped, a step costs far more than an
    /// update), then every `occupancy_update_every` steps.
    pub fn occupancy_due(&self, step: u32) -> bool {
        let t = &self.config.train;
        t.occupancy_resolution > 0 && (step < t.occupancy_warmup || step.is_multiple_of(t.occupancy_update_every))
    }

    /// Cells of the occupancy grid (each update visits 1 / OCC_PHASES of them).
    pub fn occupancy_cells(&self) -> u32 {
        self.config.train.occupancy_resolution.pow(3)
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

    /// Updates the cells of `phase` (the uniforms' `occ_phase` must be `phase`; the decoder blocks
    /// must be current), one dispatch per node, then the grid's mean.
    pub fn encode_occupancy(&self, encoder: &mut wgpu::CommandEncoder, phase: u32) {
        let n_nodes = self.octree.nodes.len();
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("occupancy"), timestamp_writes: None });
            pass.set_pipeline(&self.pipelines.occupancy);
            for (node, group) in self.bind_groups.occupancy.iter().enumerate() {
                let cells = self.occ_counts[phase as usize * n_nodes + node];
                if cells > 0 {
                    pass.set_bind_group(0, group, &[]);
                    let (x, y) = dispatch_size(cells, 64);
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
        }
        dispatch(encoder, "occupancy mean", &self.pipelines.occupancy_mean, &self.bind_groups.occupancy_mean, 256, 256);
    }

    /// field backward -> Adam.
    pub fn encode_backward(&self, encoder: &mut wgpu::CommandEncoder) {
        self.encode_field_backward(encoder);
        self.encode_adam(encoder);
    }

    /// Adam over every parameter (clears the gradients).
    pub fn encode_adam(&self, encoder: &mut wgpu::CommandEncoder) {
        let threads = self.n_params.div_ceil(ADAM_RUN);
        dispatch(encoder, "adam", &self.pipelines.adam, &self.bind_groups.adam, threads, 64);
    }

    /// One training step with a wait after every pass: milliseconds per pass (for `bench`; slow).
    pub fn profile_step(&mut self) -> Result<Vec<(&'static str, f64)>> {
        self.prepare_step(self.step);
        self.gpu.wait()?;
        let n_rays = self.max_rays;
        let n_samples = n_rays * self.config.train.samples_per_ray;
        let mut times = Vec::new();
        let mut timed = |name: &'static str, record: &dyn Fn(&mut wgpu::CommandEncoder)| -> Result<()> {
            let started = std::time::Instant::now();
            let mut encoder =
                self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(name) });
            record(&mut encoder);
            self.gpu.queue.submit([encoder.finish()]);
            self.gpu.wait()?;
            times.push((name, started.elapsed().as_secs_f64() * 1e3));
            Ok(())
        };
        let (p, b) = (&self.pipelines, &self.bind_groups);
        if self.occupancy_due(self.step) {
            timed("occupancy", &|e| {
                self.encode_decoders(e);
                self.encode_occupancy(e, self.occupancy_phase(self.step));
            })?;
        }
        timed("rays", &|e| dispatch(e, "rays", &p.rays, &b.rays, n_rays, 64))?;
        timed("samples", &|e| self.encode_samples(e, n_samples))?;
        timed("field_forward", &|e| self.encode_field_forward(e))?;
        timed("render", &|e| dispatch(e, "render", &p.render, &b.render, n_rays, 64))?;
        timed("loss_stats", &|e| dispatch(e, "loss_stats", &p.loss_stats, &b.loss_stats, 256, 256))?;
        timed("field_backward", &|e| self.encode_field_backward(e))?;
        timed("adam", &|e| self.encode_adam(e))?;
        self.step += 1;
        Ok(times)
    }

    /// Reads and clears the loss statistics (a small read-back: call every few steps).
    pub fn read_stats(&self) -> Result<LossStats> {
        let stats: Vec<f32> = self.gpu.read(&self.buffers.stats, 3)?;
        self.gpu.write(&self.buffers.stats, &[0.0f32; 4]);
        let steps = stats[1].round() as u32;
        let per_step = f64::from(steps.max(1));
        Ok(LossStats { mse: f64::from(stats[0]) / per_step, steps, active_samples: f64::from(stats[2]) / per_step })
    }

    /// Renders a whole view at tree cut `cut`, in batches of the training buffers' size.
    pub fn render(&self, camera: &Camera, cut: u32) -> Result<Rendered> {
        let pixels = camera.width * camera.height;
        let mut frame = self.training_frame(self.step, 1);
        frame.training = 0;
        frame.cut = cut;
        frame.pyramid_levels = self.pyramid_levels;
        // the view's camera in a buffer of its own, bound in place of the training cameras
        let cameras = self.gpu.storage_init("render camera", bytemuck::bytes_of(&GpuCamera::from(camera)))?;
        let rays_group = self.gpu.bind(
            "render rays",
            &self.pipelines.rays,
            &[
                (0, &self.buffers.frame),
                (1, &cameras),
                (2, &self.buffers.patches),
                (3, &self.buffers.image_offsets),
                (4, &self.buffers.pixels),
                (5, &self.buffers.rays),
            ],
        );
        let result_size = std::mem::size_of::<RayResult>() as u64;
        let out = self.gpu.storage("rendered view", u64::from(pixels) * result_size)?;
        let n_samples_per_ray = self.config.train.samples_per_ray;
        let mut offset = 0;
        while offset < pixels {
            let n = (pixels - offset).min(self.max_rays);
            frame.n_rays = n;
            frame.ray_offset = offset;
            frame.view = 0;
            self.gpu.write(&self.buffers.frame, &[frame]);
            let mut encoder =
                self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("render view") });
            let p = &self.pipelines;
            let b = &self.bind_groups;
            dispatch(&mut encoder, "rays", &p.rays, &rays_group, n, 64);
            self.encode_samples(&mut encoder, n * n_samples_per_ray);
            self.encode_field_forward(&mut encoder);
            dispatch(&mut encoder, "render", &p.render, &b.render, n, 64);
            encoder.copy_buffer_to_buffer(
                &self.buffers.results,
                0,
                &out,
                u64::from(offset) * result_size,
                u64::from(n) * result_size,
            );
            self.gpu.queue.submit([encoder.finish()]);
            offset += n;
        }
        let results: Vec<RayResult> = self.gpu.read(&out, pixels as usize)?;
        self.gpu.free(out);
        self.gpu.free(cameras);
        let rgb = results.iter().flat_map(|r| r.rgb).collect();
        Ok(Rendered {
            rgb: Image { width: camera.width, height: camera.height, rgb, alpha: Vec::new() },
            depth: results.iter().map(|r| r.depth).collect(),
            opacity: results.iter().map(|r| r.opacity).collect(),
        })
    }

    pub fn read_params(&self) -> Result<Vec<f32>> {
        self.gpu.read(&self.buffers.params, self.n_params as usize)
    }

    pub fn write_params(&self, params: &[f32]) -> Result<()> {
        if params.len() != self.n_params as usize {
            bail!("expected {} parameters, got {}", self.n_params, params.len());
        }
        self.gpu.write(&self.buffers.params, params);
        Ok(())
    }
}

fn bind_all(gpu: &Gpu, p: &Pipelines, b: &Buffers, n_nodes: u32, decoder_stride: u64) -> BindGroups {
    let per_node = |label: &str, pipeline: &wgpu::ComputePipeline, buffers: &[(u32, &wgpu::Buffer)]| {
        (0..n_nodes)
            .map(|node| {
                let window = (10, &b.decoders, u64::from(node) * decoder_stride, decoder_stride);
                gpu.bind_window(label, pipeline, buffers, Some(window))
            })
            .collect()
    };
    BindGroups {
        rays: gpu.bind(
            "rays",
            &p.rays,
            &[(0, &b.frame), (1, &b.cameras), (2, &b.patches), (3, &b.image_offsets), (4, &b.pixels), (5, &b.rays)],
        ),
        samples: gpu.bind(
            "samples",
            &p.samples,
            &[
                (0, &b.frame),
                (1, &b.rays),
                (2, &b.nodes),
                (3, &b.samples),
                (4, &b.occupancy),
                (5, &b.occupancy_mean),
                (7, &b.node_counts),
            ],
        ),
        node_lists: gpu.bind(
            "node lists",
            &p.node_lists,
            &[(0, &b.frame), (7, &b.node_counts), (8, &b.active_count), (9, &b.dispatch_args), (10, &b.decoders)],
        ),
        scatter_samples: gpu.bind(
            "scatter samples",
            &p.scatter_samples,
            &[(0, &b.frame), (3, &b.samples), (6, &b.active_list), (10, &b.decoders)],
        ),
        decoders: gpu.bind("decoders", &p.decoders, &[(0, &b.frame), (4, &b.params), (10, &b.decoders)]),
        occupancy_mean: gpu.bind(
            "occupancy mean",
            &p.occupancy_mean,
            &[(0, &b.frame), (6, &b.occupancy), (7, &b.occupancy_mean)],
        ),
        occupancy: per_node(
            "occupancy",
            &p.occupancy,
            &[(0, &b.frame), (2, &b.nodes), (4, &b.params), (6, &b.occupancy), (7, &b.occ_cells), (8, &b.occ_ranges)],
        ),
        field_forward: per_node(
            "field forward",
            &p.field_forward,
            &[
                (0, &b.frame),
                (1, &b.rays),
                (2, &b.nodes),
                (3, &b.samples),
                (4, &b.params),
                (5, &b.field_out),
                (6, &b.active_list),
            ],
        ),
        render: gpu.bind(
            "render",
            &p.render,
            &[(0, &b.frame), (1, &b.rays), (2, &b.samples), (3, &b.field_out), (4, &b.results), (5, &b.sample_grads)],
        ),
        field_backward: per_node(
            "field backward",
            &p.field_backward,
            &[
                (0, &b.frame),
                (1, &b.rays),
                (2, &b.nodes),
                (3, &b.samples),
                (4, &b.params),
                (5, &b.sample_grads),
                (6, &b.active_list),
                (9, &b.grads),
            ],
        ),
        adam: gpu.bind("adam", &p.adam, &[(0, &b.frame), (1, &b.params), (2, &b.moments), (3, &b.grads)]),
        loss_stats: gpu.bind("loss statistics", &p.loss_stats, &[(0, &b.frame), (1, &b.results), (2, &b.stats)]),
    }
}

pub fn dispatch(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    group: &wgpu::BindGroup,
    threads: u32,
    workgroup: u32,
) {
    let mut pass =
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, group, &[]);
    let (x, y) = dispatch_size(threads, workgroup);
    pass.dispatch_workgroups(x, y, 1);
}

/// The cells of an occupancy grid of `res`^3 sorted by update phase (cell % OCC_PHASES) then by the
/// deepest node holding the cell, and per (phase, node) the (first, count) range in that list. Config
/// validation makes `res` a multiple of 2^max_depth, so each cell lies in one node.
pub fn occupancy_cells_by_node(octree: &Octree, res: u32) -> (Vec<u32>, Vec<[u32; 2]>) {
    let n_nodes = octree.nodes.len();
    let mut keyed: Vec<(u32, u32)> = (0..res.pow(3))
        .map(|cell| {
            let c = [cell % res, (cell / res) % res, cell / (res * res)];
            let centre = c.map(|v| (v as f32 + 0.5) * (2.0 / res as f32) - 1.0);
            let node = octree.level_node(centre, 0.0, u32::MAX);
            ((cell % OCC_PHASES) * n_nodes as u32 + node, cell)
        })
        .collect();
    keyed.sort_unstable();
    let mut ranges = vec![[0u32; 2]; OCC_PHASES as usize * n_nodes];
    for (i, &(key, _)) in keyed.iter().enumerate().rev() {
        ranges[key as usize] = [i as u32, ranges[key as usize][1] + 1];
    }
    (keyed.into_iter().map(|(_, cell)| cell).collect(), ranges)
}

/// The occupancy grid is refreshed in this many interleaved parts, one per update (occupancy.wgsl).
pub const OCC_PHASES: u32 = 4;

/// Per-step RNG seed for the kernels (the CPU reference derives the same).
pub fn step_seed(seed: u64, step: u32) -> u32 {
    let mut rng = SplitMix64(seed ^ (u64::from(step) << 32));
    rng.next_u64() as u32
}

fn pack_rgba8(rgb: &[f32], alpha: f32) -> u32 {
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u32;
    q(rgb[0]) | (q(rgb[1]) << 8) | (q(rgb[2]) << 16) | (q(alpha) << 24)
}
