//! `infnerf bench`: training throughput against the machine's own copy bandwidth, measured in one run.

use crate::gpu::kernel::Recorder;
use crate::gpu::records::OCC_PHASES;
use crate::gpu::shader::KernelShape;
use crate::gpu::{Gpu, GpuOptions};
use crate::kernel;
use crate::run::{data_dir, load_config, load_data};
use crate::trainer::Trainer;
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    pub float_atomics: bool,
    /// Octree nodes and parameter pages.
    pub nodes: usize,
    pub pages: u32,
    /// Dispatches of one training step (without and with an occupancy update).
    pub dispatches_per_step: u32,
    pub dispatches_with_occupancy: u32,
    /// Invocations per workgroup of the node-batched field passes, and where they read the weights.
    pub field_workgroup: u32,
    pub decoder_weights: String,
    pub steps: u32,
    pub seconds: f64,
    /// Mean squared error of the first and last statistics reads of the timed steps, so a bench
    /// shows that the field trains (and a size setting that breaks training shows here).
    pub mse_first: f64,
    pub mse_last: f64,
    pub rays_per_s: f64,
    /// Sample slots per second (rays x samples_per_ray), skipped ones included.
    pub samples_per_s: f64,
    /// Samples the field evaluated per second (the work that scales with the scene).
    pub active_samples_per_s: f64,
    /// Samples per step the field evaluated at the end of the run (the rest skipped as empty space),
    /// the proposal's included, and per ray; how the steps placed their samples.
    pub samples_active_per_step: f64,
    pub evaluated_per_ray: f64,
    pub sampling_phase: crate::config::SamplingPhase,
    pub samples_per_step: f64,
    /// Modelled memory traffic of one sample through a whole training step (see `bytes_per_sample`).
    pub bytes_per_sample: f64,
    pub achieved_gbps: f64,
    pub copy_gbps: f64,
    pub bandwidth_fraction: f64,
    /// Decoder FLOPs per sample, forward + backward (a recomputed forward included), averaged over all
    /// samples (skipped ones cost none).
    pub mlp_flops_per_sample: f64,
    pub mlp_gflops: f64,
    /// Milliseconds per pass, averaged over `PROFILED_STEPS` steps run pass by pass (each pass
    /// followed by a wait); the occupancy update averaged over the steps that ran it.
    pub pass_ms: Vec<(String, f64)>,
    /// Samples the field evaluated per profiled step, and the field passes' microseconds per such
    /// sample.
    pub profiled_active_samples: f64,
    /// The last profiled step's field workgroups, nodes with samples, and the fraction of the
    /// workgroups' invocations that hold a sample.
    pub field_groups: u32,
    pub nodes_with_samples: u32,
    pub lane_fill: f64,
    pub field_forward_us_per_sample: f64,
    pub field_backward_us_per_sample: f64,
    /// Whether the backward recomputed the field or read the activations the forward stored
    /// (`train.recompute_backward`), the rays that went through the passes at once, and the device
    /// memory the trainer had allocated at the end and at most.
    pub recompute_backward: bool,
    /// The number formats the trainer ran in ("f32" or "mixed": f16 tables, gradients and stored
    /// activations, `train.precision`).
    pub precision: crate::config::Precision,
    pub chunk_rays: u32,
    pub gpu_mib: f64,
    pub peak_gpu_mib: f64,
}

/// Steps timed pass by pass at the end of a bench.
const PROFILED_STEPS: u32 = 16;

pub fn bench(
    data: Option<&Path>,
    config: Option<&Path>,
    downscale: Option<u32>,
    seconds: f64,
    gpu_options: &GpuOptions,
) -> Result<BenchReport> {
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--seconds must be a positive number");
    }
    let config = load_config(config)?.with_downscale(downscale)?;
    let dataset = load_data(&data_dir(data)?, &config)?;
    let gpu = Arc::new(Gpu::new(gpu_options)?);
    let mut trainer = Trainer::new(gpu.clone(), config, &dataset)?;
    let copy_gbps = copy_bandwidth(&gpu, &trainer.shape)?;
    // untimed warm-up past the occupancy grid's warm-up, so the timing sees steady-state skipping
    // (and past the start of resampling from a proposal, when the sampling schedule has one)
    let t = &trainer.config.train;
    let warmup = (t.occupancy_warmup + 2 * t.occupancy_update_every * OCC_PHASES).max(t.hierarchical_from.unwrap_or(0));
    for _ in 0..warmup.max(3) {
        trainer.step()?;
    }
    trainer.read_stats()?;
    let mut dispatches = (0, 0);
    for _ in 0..trainer.config.train.occupancy_update_every {
        let with_occupancy = trainer.occupancy_due(trainer.step);
        trainer.step()?;
        if with_occupancy {
            dispatches.1 = trainer.last_dispatches;
        } else {
            dispatches.0 = trainer.last_dispatches;
        }
    }
    trainer.read_stats()?;
    let started = Instant::now();
    let first = trainer.step;
    let mut last_stats = trainer.read_stats()?;
    let mut active_total = 0.0;
    let mut mse_first = None;
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..5 {
            trainer.step()?;
        }
        last_stats = trainer.read_stats()?;
        active_total += last_stats.active_samples * f64::from(last_stats.steps);
        mse_first.get_or_insert(last_stats.mse);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let steps = trainer.step - first;
    // pass by pass at the end, where the occupancy grid skips what it will skip in a long run
    let mut totals: Vec<(String, f64, u32)> = Vec::new();
    trainer.read_stats()?;
    for _ in 0..PROFILED_STEPS {
        for (name, ms) in trainer.profile_step()? {
            match totals.iter_mut().find(|(n, _, _)| n == name) {
                Some(entry) => (entry.1, entry.2) = (entry.1 + ms, entry.2 + 1),
                None => totals.push((name.to_string(), ms, 1)),
            }
        }
    }
    let profiled_active = trainer.read_stats()?.active_samples;
    let groups = field_groups(&gpu, &trainer)?;
    let pass_ms: Vec<(String, f64)> = totals.into_iter().map(|(name, ms, n)| (name, ms / f64::from(n))).collect();
    let per_sample = |pass: &str| {
        let ms = pass_ms.iter().find(|(name, _)| name == pass).map_or(0.0, |(_, ms)| *ms);
        ms * 1e3 / profiled_active.max(1.0)
    };
    let rays_per_step = f64::from(trainer.rays_per_step());
    let samples_per_step = rays_per_step * f64::from(trainer.config.train.samples_per_ray_at(trainer.step));
    let samples_per_s = f64::from(steps) * samples_per_step / elapsed;
    let active = (last_stats.active_samples / samples_per_step).clamp(0.0, 1.0);
    let bytes = bytes_per_sample(&trainer, samples_per_step, active);
    let achieved_gbps = samples_per_s * bytes / 1e9;
    let flops = active * mlp_flops_per_sample(&trainer);
    Ok(BenchReport {
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        float_atomics: gpu.float_atomics,
        nodes: trainer.octree.nodes.len(),
        pages: trainer.model.paging.n_pages,
        dispatches_per_step: dispatches.0,
        dispatches_with_occupancy: dispatches.1,
        field_workgroup: trainer.shape.field_workgroup,
        decoder_weights: format!("{:?}", trainer.shape.weights),
        steps,
        seconds: elapsed,
        mse_first: mse_first.unwrap_or(f64::NAN),
        mse_last: last_stats.mse,
        rays_per_s: f64::from(steps) * rays_per_step / elapsed,
        samples_per_s,
        active_samples_per_s: active_total / elapsed,
        samples_active_per_step: last_stats.active_samples,
        evaluated_per_ray: last_stats.active_samples / rays_per_step,
        sampling_phase: trainer.config.train.sampling_phase(trainer.step),
        samples_per_step,
        bytes_per_sample: bytes,
        achieved_gbps,
        copy_gbps,
        bandwidth_fraction: achieved_gbps / copy_gbps,
        mlp_flops_per_sample: flops,
        mlp_gflops: samples_per_s * flops / 1e9,
        field_forward_us_per_sample: per_sample("field_forward"),
        field_backward_us_per_sample: per_sample("field_backward"),
        profiled_active_samples: profiled_active,
        field_groups: groups.workgroups,
        nodes_with_samples: groups.nodes_with_samples,
        lane_fill: groups.samples as f64
            / (f64::from(groups.workgroups) * f64::from(trainer.shape.field_workgroup)).max(1.0),
        pass_ms,
        recompute_backward: trainer.config.train.recompute_backward,
        precision: trainer.precision(),
        chunk_rays: trainer.chunk_patches * trainer.config.train.patch_size * trainer.config.train.patch_size,
        gpu_mib: gpu.allocated_bytes() as f64 / f64::from(1 << 20),
        peak_gpu_mib: gpu.peak_bytes() as f64 / f64::from(1 << 20),
    })
}

/// The last step's node-batched field dispatches: workgroups, nodes with samples, samples.
struct FieldGroups {
    workgroups: u32,
    nodes_with_samples: u32,
    samples: u32,
}

fn field_groups(gpu: &Gpu, trainer: &Trainer) -> Result<FieldGroups> {
    let n = trainer.octree.nodes.len();
    let counts: Vec<u32> = gpu.read(&trainer.train.node_counts, n)?;
    let first: Vec<u32> = gpu.read(&trainer.train.wg_first, n + 1)?;
    Ok(FieldGroups {
        workgroups: first[n],
        nodes_with_samples: counts.iter().filter(|&&c| c > 0).count() as u32,
        samples: counts.iter().sum(),
    })
}

/// What one sample must move through memory in one step, averaged over all samples of
/// which the fraction `active` is not skipped as empty space: for every sample its record written,
/// read again to sort the active ones by node, read by the forward and backward render and its
/// gradient written; for active ones the list entry, the hash corners gathered forward and again in
/// the recomputed backward, scattered read-modify-write gradients, the field output, the decoder
/// weights loaded per workgroup and the decoder-gradient atomics per workgroup; and the optimizer's
/// traffic, shared over the step's samples. A backward that reads stored activations
/// (`train.recompute_backward = false`) gathers no corners: the forward writes the activations and
/// the backward reads them. Under mixed precision the gathered corners, the per-sample gradients and
/// the stored activations are f16, and Adam also writes the tables' f16 copy; gradients and master
/// weights stay f32.
pub fn bytes_per_sample(trainer: &Trainer, samples_per_step: f64, active: f64) -> f64 {
    let l = &trainer.layout;
    let s = f64::from(trainer.config.train.samples_per_ray);
    let ray_record = 64.0 / s;
    let sample = 32.0;
    let half = trainer.model.half;
    let word = if half { 2.0 } else { 4.0 };
    let grad_record = 4.0 * word;
    // gathered (f32 or f16), and scattered as f32 gradients
    let corners_read = f64::from(l.hash_levels) * 8.0 * 2.0 * word;
    let corners = f64::from(l.hash_levels) * 8.0 * 2.0 * 4.0;
    let wg = f64::from(trainer.shape.field_workgroup);
    let weights = f64::from(l.mlp_params()) * 4.0 / wg;
    let samples_pass = sample + ray_record + active * 4.0;
    let scatter = sample + active * 4.0;
    let stored = f64::from(trainer.config.stored_act_words()) * word;
    let recomputed = if stored > 0.0 { stored } else { corners_read };
    let forward = active * (4.0 + sample + ray_record + corners_read + weights + 16.0 + stored);
    let render = 2.0 * (sample + 16.0) + grad_record;
    let backward = active * (4.0 + sample + grad_record + ray_record + recomputed + 2.0 * corners + weights);
    let decoder_atomics = active * f64::from(l.mlp_params()) * 8.0 / wg;
    let nodes = trainer.octree.nodes.len() as f64;
    let touched_hash =
        (active * samples_per_step * f64::from(l.hash_levels) * 16.0).min(nodes * f64::from(l.hash_params));
    let touched = touched_hash + nodes * f64::from(l.mlp_params());
    let copy = if half { touched_hash * 2.0 } else { 0.0 };
    let adam = (trainer.n_params() as f64 * 4.0 + touched * 20.0 + copy) / samples_per_step;
    samples_pass + scatter + forward + render + backward + decoder_atomics + adam
}

/// Multiply-adds x2 of the decoders: forward, the recomputed forward (unless the backward reads
/// stored activations), input and weight gradients.
pub fn mlp_flops_per_sample(trainer: &Trainer) -> f64 {
    let l = &trainer.layout;
    let macs = f64::from(l.hidden * l.in1 + l.out1 * l.hidden + l.hidden * l.in3 + 3 * l.hidden);
    let passes = if trainer.config.train.recompute_backward { 4.0 } else { 3.0 };
    2.0 * macs * passes
}

kernel! {
    /// A plain copy: the memory bandwidth the trainer is compared with.
    pub struct CopyKernel, CopyBindings = "copy" {
        includes: [],
        workgroup: |_| 256,
        bindings: {
            src: Read [[f32; 4]],
            dst: ReadWrite [[f32; 4]],
        }
    }
}

/// GB/s of a plain copy kernel (read + write counted), best of a few runs.
fn copy_bandwidth(gpu: &Gpu, shape: &KernelShape) -> Result<f64> {
    let bytes = (64u64 << 20).min(gpu.max_buffer_bytes() / 2);
    let src = gpu.storage("copy source", bytes)?;
    let dst = gpu.storage("copy destination", bytes)?;
    let kernel = CopyKernel::new(gpu, shape)?;
    let group = kernel.bind(gpu, &CopyBindings { src: &src, dst: &dst });
    let threads = (bytes / 16) as u32;
    let run = |iterations: u32| -> Result<f64> {
        let started = Instant::now();
        let mut rec = Recorder::new(gpu, "copy bench");
        for _ in 0..iterations {
            rec.dispatch(&kernel, &group, threads);
        }
        rec.submit();
        gpu.wait()?;
        Ok(started.elapsed().as_secs_f64())
    };
    run(1)?;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let iterations = 8;
        let seconds = run(iterations)?;
        best = best.max(2.0 * bytes as f64 * f64::from(iterations) / seconds / 1e9);
    }
    gpu.free(&src);
    gpu.free(&dst);
    Ok(best)
}
