//! Headless runs behind the command line: train, eval and bench.

use crate::config::Config;
use crate::data::{load_dataset, Dataset, Image, LoadOptions, View};
use crate::gpu::{Gpu, GpuOptions};
use crate::io::{load_checkpoint, save_checkpoint, write_atomic, MetricsLog};
use crate::metrics::{mse, psnr, ssim};
use crate::octree::Octree;
use crate::trainer::Trainer;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What `infnerf train` was asked for.
#[derive(Clone, Debug, Default)]
pub struct TrainRequest {
    /// None: the embedded default scene.
    pub data: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub out: PathBuf,
    pub steps: Option<u32>,
    pub max_seconds: Option<f64>,
    pub eval_views: Option<usize>,
    pub gpu: GpuOptions,
    /// Draw a progress bar (off in tests).
    pub progress: bool,
}

/// eval.json
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct EvalReport {
    pub psnr: f64,
    pub ssim: f64,
    pub views: usize,
    pub split: String,
    pub steps: u32,
    pub seconds: f64,
}

/// One line of metrics.jsonl.
#[derive(Clone, Debug, Serialize)]
pub struct MetricsLine {
    pub step: u32,
    pub elapsed_s: f64,
    pub loss_total: f64,
    pub loss_mse: f64,
    pub psnr_train: f64,
    pub rays: u64,
    pub samples: u64,
    /// Samples per step the field evaluated (the others were skipped as empty space).
    pub samples_active: f64,
    pub rays_per_s: f64,
    pub lr: f64,
    pub lr_hash: f64,
    pub lr_mlp: f64,
    pub gpu_bytes: u64,
}

pub fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    })
}

pub fn data_dir(data: Option<&Path>) -> Result<PathBuf> {
    match data {
        Some(dir) => Ok(dir.to_path_buf()),
        None => crate::scene_gen::default_scene_dir(),
    }
}

pub fn load_data(dir: &Path, config: &Config) -> Result<Dataset> {
    let dataset = load_dataset(dir, &LoadOptions::from(&config.data))?;
    if dataset.train.is_empty() {
        bail!("{}: no training views", dir.display());
    }
    Ok(dataset)
}

/// The training run: steps until `steps` or `max_seconds`, then evaluation and a checkpoint.
pub fn train(request: &TrainRequest) -> Result<EvalReport> {
    let mut config = load_config(request.config.as_deref())?.with_cli_overrides();
    if let Some(steps) = request.steps {
        if steps == 0 {
            bail!("--steps must be positive");
        }
        config.train.steps = steps;
    } else if request.max_seconds.is_some() {
        config.train.steps = u32::MAX;
    }
    if let Some(s) = request.max_seconds {
        if !(s.is_finite() && s > 0.0) {
            bail!("--max-seconds must be a positive number");
        }
    }
    let dir = data_dir(request.data.as_deref())?;
    let dataset = load_data(&dir, &config)?;
    let gpu = Arc::new(Gpu::new(&request.gpu)?);
    std::fs::create_dir_all(&request.out).with_context(|| format!("cannot create {}", request.out.display()))?;
    write_atomic(&request.out.join("config.toml"), config.to_toml().as_bytes())?;
    let mut trainer = Trainer::new(gpu.clone(), config.clone(), &dataset)?;
    log::info!(
        "{}: {} training views, octree nodes per depth {:?}, {} parameters, adapter {}",
        dir.display(),
        dataset.train.len(),
        trainer.octree.depth_counts(),
        trainer.n_params,
        gpu.info.name
    );
    let mut metrics = MetricsLog::create(&request.out.join("metrics.jsonl"))?;
    let bar = progress_bar(request, &config);
    let started = Instant::now();
    let rays_per_step = u64::from(trainer.max_rays);
    let samples_per_step = rays_per_step * u64::from(config.train.samples_per_ray);
    let mut last = (0u32, 0.0f64);
    loop {
        trainer.step()?;
        let step = trainer.step;
        let done =
            step >= config.train.steps || request.max_seconds.is_some_and(|s| started.elapsed().as_secs_f64() >= s);
        if step.is_multiple_of(config.train.log_every) || done {
            let stats = trainer.read_stats()?;
            let elapsed = started.elapsed().as_secs_f64();
            let rays_per_s = (step - last.0) as f64 * rays_per_step as f64 / (elapsed - last.1).max(1e-9);
            last = (step, elapsed);
            let lr = f64::from(trainer.lr_factor(step));
            let line = MetricsLine {
                step,
                elapsed_s: elapsed,
                loss_total: stats.mse,
                loss_mse: stats.mse,
                psnr_train: psnr(stats.mse),
                rays: u64::from(step) * rays_per_step,
                samples: u64::from(step) * samples_per_step,
                samples_active: stats.active_samples,
                rays_per_s,
                lr,
                lr_hash: lr * f64::from(config.train.lr_hash),
                lr_mlp: lr * f64::from(config.train.lr_mlp),
                gpu_bytes: gpu.allocated_bytes(),
            };
            metrics.append(&line)?;
            if let Some(bar) = &bar {
                bar.set_position(if request.max_seconds.is_some() && config.train.steps == u32::MAX {
                    elapsed as u64
                } else {
                    u64::from(step)
                });
                bar.set_message(format!(
                    "step {step} loss {:.5} psnr {:.2} dB {:.0} rays/s",
                    stats.mse, line.psnr_train, rays_per_s
                ));
            }
            if !stats.mse.is_finite() {
                bail!("training diverged at step {step}: the loss is not finite");
            }
        }
        if done {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish();
    }
    save_trainer_checkpoint(&trainer, &request.out)?;
    let (split, views) = eval_split(&dataset);
    let renders = request.out.join("renders");
    let report = evaluate(&trainer, views, split, request.eval_views, seconds, Some(&renders))?;
    write_atomic(&request.out.join("eval.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    Ok(report)
}

fn progress_bar(request: &TrainRequest, config: &Config) -> Option<indicatif::ProgressBar> {
    if !request.progress {
        return None;
    }
    let (len, unit) = match (request.max_seconds, request.steps) {
        (Some(s), None) => (s.ceil() as u64, "s"),
        _ => (u64::from(config.train.steps), "steps"),
    };
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}");
    bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    Some(bar)
}

/// The split evaluation uses: test, else val, else train.
pub fn eval_split(dataset: &Dataset) -> (&'static str, &[View]) {
    if !dataset.test.is_empty() {
        ("test", &dataset.test)
    } else if !dataset.val.is_empty() {
        ("val", &dataset.val)
    } else {
        ("train", &dataset.train)
    }
}

/// PSNR (mean over views) and SSIM of `limit` evenly spaced views (all when None).
pub fn evaluate(
    trainer: &Trainer,
    views: &[View],
    split: &str,
    limit: Option<usize>,
    seconds: f64,
    renders: Option<&Path>,
) -> Result<EvalReport> {
    let chosen = evenly_spaced(views.len(), limit);
    if chosen.is_empty() {
        bail!("no {split} views to evaluate");
    }
    let (mut psnr_sum, mut ssim_sum) = (0.0, 0.0);
    for &i in &chosen {
        let view = &views[i];
        let rendered = trainer.render(&view.camera, trainer.config.field.max_depth)?;
        psnr_sum += psnr(mse(&rendered.rgb.rgb, &view.image.rgb));
        ssim_sum += ssim(&rendered.rgb, &view.image);
        if let Some(dir) = renders.filter(|_| i == chosen[0] || chosen.len() < 4 || i == chosen[chosen.len() / 2]) {
            save_comparison(&dir.join(format!("{split}_{i:03}.png")), &view.image, &rendered.rgb)?;
        }
    }
    let n = chosen.len() as f64;
    Ok(EvalReport {
        psnr: psnr_sum / n,
        ssim: ssim_sum / n,
        views: chosen.len(),
        split: split.to_string(),
        steps: trainer.step,
        seconds,
    })
}

/// Ground truth | render | 4x absolute error, side by side, as a PNG (written atomically).
fn save_comparison(path: &Path, truth: &Image, render: &Image) -> Result<()> {
    let (w, h) = (truth.width, truth.height);
    let mut out = image::RgbImage::new(3 * w, h);
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
    for y in 0..h {
        for x in 0..w {
            let i = 3 * (y * w + x) as usize;
            let t = [0, 1, 2].map(|c| truth.rgb[i + c]);
            let r = [0, 1, 2].map(|c| render.rgb[i + c]);
            out.put_pixel(x, y, image::Rgb(t.map(byte)));
            out.put_pixel(w + x, y, image::Rgb(r.map(byte)));
            out.put_pixel(2 * w + x, y, image::Rgb([0, 1, 2].map(|c| byte(4.0 * (t[c] - r[c]).abs()))));
        }
    }
    let mut png = Vec::new();
    out.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_atomic(path, &png).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// `k` indices spread evenly over 0..n (the first is 0).
pub fn evenly_spaced(n: usize, k: Option<usize>) -> Vec<usize> {
    match k {
        Some(k) if k < n => (0..k).map(|i| i * n / k).collect(),
        _ => (0..n).collect(),
    }
}

pub fn save_trainer_checkpoint(trainer: &Trainer, out: &Path) -> Result<()> {
    let params = trainer.read_params()?;
    let nodes = trainer.octree.nodes.len();
    let sidecar = json!({
        "format": "infnerf-checkpoint-1",
        "step": trainer.step,
        "config": trainer.config,
        "node_params": trainer.layout.node_params,
        "tree": trainer.octree.to_layout_json(),
    });
    let occupancy: Vec<f32> = trainer.gpu.read(&trainer.buffers.occupancy, trainer.occupancy_cells() as usize)?;
    let mean: Vec<f32> = trainer.gpu.read(&trainer.buffers.occupancy_mean, 1)?;
    save_checkpoint(
        &out.join(crate::io::CHECKPOINT_TENSORS),
        &[
            ("params", vec![nodes, trainer.layout.node_params as usize], &params),
            ("occupancy", vec![occupancy.len()], &occupancy),
            ("occupancy_mean", vec![1], &mean),
        ],
        &sidecar,
    )
}

/// Rebuilds a trainer from a checkpoint written by `save_trainer_checkpoint`.
pub fn load_trainer(checkpoint: &Path, dataset: &Dataset, gpu: Arc<Gpu>) -> Result<Trainer> {
    let (tensors, sidecar) = load_checkpoint(checkpoint)?;
    let name = checkpoint.display();
    let config: Config = serde_json::from_value(sidecar.get("config").cloned().unwrap_or_default())
        .with_context(|| format!("{name}: sidecar field `config` is missing or malformed"))?;
    config.validate(&format!("{name} (config)"))?;
    let tree = sidecar.get("tree").with_context(|| format!("{name}: sidecar field `tree` is missing"))?;
    let octree = Octree::from_layout_json(tree).with_context(|| format!("{name}: sidecar field `tree`"))?;
    let step = sidecar
        .get("step")
        .and_then(|s| s.as_u64())
        .with_context(|| format!("{name}: sidecar field `step` is missing"))?;
    let tensor = |wanted: &str, len: usize| -> Result<Vec<f32>> {
        let (_, _, values) = tensors
            .iter()
            .find(|(tensor, _, _)| tensor == wanted)
            .with_context(|| format!("{name}: no tensor named `{wanted}`"))?;
        if values.len() != len {
            bail!("{name}: tensor `{wanted}` holds {} values, the tree and config need {len}", values.len());
        }
        Ok(values.clone())
    };
    let mut trainer = Trainer::with_octree(gpu, config, dataset, octree)?;
    trainer.write_params(&tensor("params", trainer.n_params as usize)?)?;
    if trainer.config.train.occupancy_resolution > 0 {
        trainer.gpu.write(&trainer.buffers.occupancy, &tensor("occupancy", trainer.occupancy_cells() as usize)?);
        trainer.gpu.write(&trainer.buffers.occupancy_mean, &tensor("occupancy_mean", 1)?);
    }
    trainer.step = step as u32;
    Ok(trainer)
}

/// `infnerf eval`: a checkpoint on one split of a dataset.
pub fn eval_checkpoint(
    checkpoint: &Path,
    data: &Path,
    split: &str,
    views: Option<usize>,
    gpu: &GpuOptions,
) -> Result<EvalReport> {
    let (_, sidecar) = load_checkpoint(checkpoint)?;
    let config: Config = serde_json::from_value(sidecar.get("config").cloned().unwrap_or_default())
        .with_context(|| format!("{}: sidecar field `config` is missing or malformed", checkpoint.display()))?;
    let dataset = load_data(data, &config)?;
    let chosen: &[View] = match split {
        "test" => &dataset.test,
        "val" => &dataset.val,
        "train" => &dataset.train,
        other => bail!("--split {other:?}: expected test, val or train"),
    };
    let trainer = load_trainer(checkpoint, &dataset, Arc::new(Gpu::new(gpu)?))?;
    let started = Instant::now();
    let mut report = evaluate(&trainer, chosen, split, views, 0.0, None)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
