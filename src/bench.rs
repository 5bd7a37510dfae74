//! `infnerf bench`: training throughput against the machine's own copy bandwidth, measured in one run.

use crate::gpu::{Gpu, GpuOptions};
use crate::run::{data_dir, load_config, load_data};
use crate::trainer::{dispatch, Trainer, OCC_PHASES};
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
    pub steps: u32,
    pub seconds: f64,
    pub rays_per_s: f64,
    pub samples_per_s: f64,
    /// Samples per step the field evaluated at the end of the run (the rest skipped as empty space).
    pub samples_active_per_step: f64,
    pub samples_per_step: f64,
    /// Modelled memory traffic of one sample through a whole training step (see `bytes_per_sample`).
    pub bytes_per_sample: f64,
    pub achieved_gbps: f64,
    pub copy_gbps: f64,
    pub bandwidth_fraction: f64,
    /// Decoder FLOPs per sample, forward + backward (recomputed forward included), averaged over all
    /// samples (skipped ones cost none).
    pub mlp_flops_per_sample: f64,
    pub mlp_gflops: f64,
    /// Milliseconds per pass, averaged over `PROFILED_STEPS` steps run pass by pass (each pass
    /// followed by a wait); the occupancy update averaged over the steps that ran it.
    pub pass_ms: Vec<(String, f64)>,
    /// Samples the field evaluated per profiled step, and the field passes' microseconds per such
    /// sample.
    pub profiled_active_samples: f64,
    pub field_forward_us_per_sample: f64,
    pub field_backward_us_per_sample: f64,
}

/// Steps timed pass by pass at the end of a bench.
const PROFILED_STEPS: u32 = 16;

pub fn bench(
    data: Option<&Path>,
    config: Option<&Path>,
    seconds: f64,
    gpu_options: &GpuOptions,
) -> Result<BenchReport> {
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--seconds must be a positive number");
    }
    let config = load_config(config)?;
    let dataset = load_data(&data_dir(data)?, &config)?;
    let gpu = Arc::new(Gpu::new(gpu_options)?);
    let copy_gbps = copy_bandwidth(&gpu)?;
    let mut trainer = Trainer::new(gpu.clone(), config, &dataset)?;
    // untimed warm-up past the occupancy grid's warm-up, so the timing sees steady-state skipping
    let warmup = trainer.config.train.occupancy_warmup + 2 * trainer.config.train.occupancy_update_every * OCC_PHASES;
    for _ in 0..warmup.max(3) {
        trainer.step()?;
    }
    trainer.read_stats()?;
    let started = Instant::now();
    let first = trainer.step;
    let mut last_stats = trainer.read_stats()?;
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..5 {
            trainer.step()?;
        }
        last_stats = trainer.read_stats()?;
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
    let pass_ms: Vec<(String, f64)> = totals.into_iter().map(|(name, ms, n)| (name, ms / f64::from(n))).collect();
    let per_sample = |pass: &str| {
        let ms = pass_ms.iter().find(|(name, _)| name == pass).map_or(0.0, |(_, ms)| *ms);
        ms * 1e3 / profiled_active.max(1.0)
    };
    let rays_per_step = f64::from(trainer.max_rays);
    let samples_per_step = rays_per_step * f64::from(trainer.config.train.samples_per_ray);
    let samples_per_s = f64::from(steps) * samples_per_step / elapsed;
    let active = (last_stats.active_samples / samples_per_step).clamp(0.0, 1.0);
    let bytes = bytes_per_sample(&trainer, samples_per_step, active);
    let achieved_gbps = samples_per_s * bytes / 1e9;
    let flops = active * mlp_flops_per_sample(&trainer);
    Ok(BenchReport {
        adapter: gpu.info.name.clone(),
        backend: format!("{:?}", gpu.info.backend),
        float_atomics: gpu.float_atomics,
        steps,
        seconds: elapsed,
        rays_per_s: f64::from(steps) * rays_per_step / elapsed,
        samples_per_s,
        samples_active_per_step: last_stats.active_samples,
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
        pass_ms,
    })
}

/// What one sample must move through memory in one step, f32 everywhere, averaged over all samples of
/// which the fraction `active` is not skipped as empty space: for every sample its record written,
/// read again to sort the active ones by node, read by the render pass and its gradient written; for
/// active ones the hash corners gathered forward and again in the recomputed backward, scattered
/// read-modify-write gradients, the decoder-gradient atomics per workgroup; and the copy of the
/// decoders into their uniform blocks and the optimizer's traffic, shared over the step's samples.
pub fn bytes_per_sample(trainer: &Trainer, samples_per_step: f64, active: f64) -> f64 {
    let l = &trainer.layout;
    let s = f64::from(trainer.config.train.samples_per_ray);
    let ray_record = 64.0 / s;
    let sample = 32.0;
    let corners = f64::from(l.hash_levels) * 8.0 * 2.0 * 4.0;
    let samples_pass = 2.0 * sample + ray_record + active * 4.0;
    let forward = active * (4.0 + sample + ray_record + corners + 16.0);
    let render = 16.0 + sample + 16.0;
    let backward = active * (4.0 + sample + 16.0 + ray_record + corners + 2.0 * corners);
    let decoder_atomics = active * f64::from(l.mlp_params()) * 8.0 / f64::from(trainer.shape.backward_workgroup);
    let nodes = trainer.octree.nodes.len() as f64;
    let touched_hash =
        (active * samples_per_step * f64::from(l.hash_levels) * 16.0).min(nodes * f64::from(l.hash_params));
    let touched = touched_hash + nodes * f64::from(l.mlp_params());
    let adam = (f64::from(trainer.n_params) * 4.0 + touched * 28.0) / samples_per_step;
    let decoder_copy = nodes * f64::from(l.mlp_params()) * 8.0 / samples_per_step;
    samples_pass + forward + render + backward + decoder_atomics + adam + decoder_copy
}

/// Multiply-adds x2 of the decoders: forward, the recomputed forward, input and weight gradients.
pub fn mlp_flops_per_sample(trainer: &Trainer) -> f64 {
    let l = &trainer.layout;
    let macs = f64::from(l.hidden * l.in1 + l.out1 * l.hidden + l.hidden * l.in3 + 3 * l.hidden);
    2.0 * macs * 4.0
}

/// GB/s of a plain copy kernel (read + write counted), best of a few runs.
fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let bytes = (64u64 << 20).min(gpu.limits.max_storage_buffer_binding_size / 2);
    let src = gpu.storage("copy source", bytes)?;
    let dst = gpu.storage("copy destination", bytes)?;
    let pipeline = gpu.compute_pipeline("copy", include_str!("../shaders/copy.wgsl"))?;
    let group = gpu.bind("copy", &pipeline, &[(0, &src), (1, &dst)]);
    let threads = (bytes / 16) as u32;
    let run = |iterations: u32| -> Result<f64> {
        let started = Instant::now();
        let mut encoder =
            gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("copy bench") });
        for _ in 0..iterations {
            dispatch(&mut encoder, "copy", &pipeline, &group, threads, 256);
        }
        gpu.queue.submit([encoder.finish()]);
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
    Ok(best)
}
