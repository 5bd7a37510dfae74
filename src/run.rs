//! Headless runs behind the command line: train (a consumer of the trainer thread's events), eval,
//! and checkpoints.

use crate::config::Config;
use crate::data::{load_dataset, Dataset, Image, LoadOptions, View};
use crate::field::SplitMix64;
use crate::gpu::{Gpu, GpuOptions};
use crate::io::{load_checkpoint, save_checkpoint, write_atomic, MetricsLog, CHECKPOINT_TENSORS};
use crate::loss_weights::{Balancer, Group};
use crate::metrics::{mse, psnr, ssim};
use crate::octree::Octree;
use crate::session::{Event, Session, SessionOptions, StepStats};
use crate::trainer::model::Model;
use crate::trainer::Trainer;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
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
    /// Continue the run of this checkpoint (its settings, step counter, optimiser state, clock).
    pub resume: Option<PathBuf>,
    /// `--downscale`: overrides data.downscale.
    pub downscale: Option<u32>,
    pub gpu: GpuOptions,
    /// Draw a progress bar (off in tests).
    pub progress: bool,
    /// A fault to inject (`--inject-fault`).
    pub fault: Option<crate::stability::Fault>,
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
    /// Per tree cut (`eval --levels`): PSNR at its scale, depth agreement, depth error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub levels: Option<crate::levels::LevelsReport>,
}

/// One line of metrics.jsonl (a step's statistics; settings changes are lines with an `event`).
#[derive(Clone, Debug, Serialize)]
pub struct MetricsLine {
    pub step: u32,
    pub elapsed_s: f64,
    /// The weighted loss the optimiser saw.
    pub loss_total: f64,
    /// Mean squared error of the finest cut.
    pub loss_mse: f64,
    /// Every loss term's mean, per rendered cut (the first is the finest).
    pub loss: BTreeMap<String, Vec<f64>>,
    pub psnr_train: f64,
    pub rays: u64,
    pub samples: u64,
    /// Samples per step the field evaluated (the others were skipped as empty space), the
    /// proposal's included.
    pub samples_active: f64,
    /// Of those, the proposal's (forward only) in the hierarchical and importance phases.
    pub samples_proposal: f64,
    /// Field evaluations per ray (samples_active / rays per step).
    pub evaluated_per_ray: f64,
    /// How the last step placed its samples: uniform, occupancy, hierarchical or importance.
    pub sampling_phase: crate::config::SamplingPhase,
    pub rays_per_s: f64,
    pub lr: f64,
    pub lr_hash: f64,
    pub lr_mlp: f64,
    pub gpu_bytes: u64,
    /// The most device bytes allocated so far, and the rays that go through the passes at once.
    pub peak_gpu_bytes: u64,
    pub chunk_rays: u32,
    /// Whether the backward recomputed the field or read stored activations.
    pub recompute_backward: bool,
    /// The number formats: "f32", or "mixed" (f16 tables, gradients and stored activations).
    pub precision: crate::config::Precision,
    /// Mixed precision: the loss scale after the last step (1 in f32), and the steps since the last
    /// line that overflowed f16 (skipped, the scale halved; also in `skipped_steps`).
    pub loss_scale: f64,
    pub overflow_steps: u32,
    /// Non-finite values the kernels replaced by 0 since the previous line, and by kind of pass.
    pub sanitized: u64,
    pub sanitized_by_pass: BTreeMap<String, u32>,
    pub dispatches_per_step: u32,
    /// Every term's weight at `step`: lambda x schedule x balancer (SPEC §3.6, §3.7).
    pub loss_weights: BTreeMap<String, f64>,
    /// The schedule's multiplier of each term group (rgb, geometric, regularization, consistency).
    pub schedule_weights: BTreeMap<String, f64>,
    /// The balancer's weight of each term it has seen (applied when schedule.balancer is on).
    pub balancer_weights: BTreeMap<String, f64>,
    /// The level weights of the last step's rendered cuts, finest first.
    pub level_weights: Vec<f32>,
    /// The last step's global gradient norm (before clipping) and the mean since the last line.
    pub grad_norm: f64,
    pub grad_norm_mean: f64,
    /// Per tensor (hash, density, colour), the last step's gradient norm, mean, std and max.
    pub grad: BTreeMap<String, crate::stability::TensorGrad>,
    /// Anomalies since the last line, by kind (loss, grad, nonfinite), and the steps skipped and
    /// clipped (SPEC §4).
    pub anomalies: BTreeMap<String, u32>,
    pub skipped_steps: u32,
    pub clipped_steps: u32,
    /// The learning rate's plateau reductions and restore factor so far.
    pub lr_plateau_reductions: u32,
    pub lr_restore_factor: f32,
    /// The step of the last in-memory snapshot a restore would go back to (None: none yet).
    pub last_snapshot_step: Option<u32>,
    /// Loss terms that cannot run (their weight held at 0), and why: LPIPS without a weights file.
    pub unavailable: BTreeMap<String, String>,
}

impl MetricsLine {
    pub fn new(s: &StepStats) -> Self {
        Self {
            step: s.step,
            elapsed_s: s.elapsed_s,
            loss_total: s.loss.total,
            loss_mse: s.loss.mse,
            loss: s.loss.terms.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            psnr_train: psnr(s.loss.mse),
            rays: u64::from(s.step) * u64::from(s.rays_per_step),
            samples: u64::from(s.step) * s.samples_per_step,
            samples_active: s.loss.active_samples,
            samples_proposal: s.loss.proposal_samples,
            evaluated_per_ray: s.loss.active_samples / f64::from(s.rays_per_step.max(1)),
            sampling_phase: s.sampling_phase,
            rays_per_s: s.rays_per_s,
            lr: s.lr,
            lr_hash: s.lr_hash,
            lr_mlp: s.lr_mlp,
            gpu_bytes: s.gpu_bytes,
            peak_gpu_bytes: s.peak_gpu_bytes,
            chunk_rays: s.chunk_rays,
            recompute_backward: s.recompute_backward,
            precision: s.precision,
            loss_scale: s.loss.guard.loss_scale,
            overflow_steps: s.loss.guard.overflows,
            sanitized: s.loss.sanitized_total(),
            sanitized_by_pass: s.loss.sanitized.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            dispatches_per_step: s.dispatches,
            loss_weights: s.loss.term_weights.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
            schedule_weights: Group::ALL.iter().map(|&g| (g.name().to_string(), s.loss.schedule.get(g))).collect(),
            balancer_weights: s.loss.balancer.clone(),
            level_weights: s.loss.level_weights.clone(),
            grad_norm: s.loss.guard.grad_norm,
            grad_norm_mean: s.loss.guard.grad_norm_mean,
            grad: s.loss.guard.tensors.clone(),
            anomalies: [
                ("loss", s.loss.guard.anomalies_loss),
                ("grad", s.loss.guard.anomalies_grad),
                ("nonfinite", s.loss.guard.anomalies_nonfinite),
            ]
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
            skipped_steps: s.loss.guard.skipped,
            clipped_steps: s.loss.guard.clipped,
            lr_plateau_reductions: s.lr_state.plateau_reductions,
            lr_restore_factor: s.lr_state.restore_factor,
            last_snapshot_step: s.last_snapshot_step,
            unavailable: s.loss.unavailable.clone(),
        }
    }
}

/// The metrics.jsonl lines of the restores and plateau reductions a statistics read made (snapshots
/// are routine: `last_snapshot_step` in the step's line says when the last one was taken).
pub fn stability_lines(s: &StepStats) -> Vec<serde_json::Value> {
    s.loss.events.iter().map(|e| serde_json::to_value(e).expect("events serialise")).collect()
}

/// The output folder: `out`, else the folder of the checkpoint a run continues, else `default`.
pub fn out_dir(out: Option<PathBuf>, resume: Option<&Path>, default: &str) -> PathBuf {
    match (out, resume) {
        (Some(out), _) => out,
        (None, Some(checkpoint)) => checkpoint.parent().map_or_else(|| ".".into(), PathBuf::from),
        (None, None) => default.into(),
    }
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

/// A run's settings, data and starting point, loaded before a GPU is opened (the viewer opens its
/// GPU with the window).
pub struct Prepared {
    pub config: Config,
    pub data_dir: PathBuf,
    pub dataset: Arc<Dataset>,
    /// The checkpoint the run continues from.
    pub resumed: Option<CheckpointState>,
    /// A fault to inject (`--inject-fault`).
    pub fault: Option<crate::stability::Fault>,
}

/// A run ready to train: its trainer, its metrics log, and the training seconds before it.
pub struct Started {
    pub trainer: Trainer,
    pub metrics: MetricsLog,
    pub elapsed_before: f64,
}

impl Prepared {
    /// Reads the settings (or the checkpoint to resume) and the data; checks the limits.
    pub fn load(request: &TrainRequest) -> Result<Self> {
        let resumed = match &request.resume {
            Some(path) => {
                if request.config.is_some() {
                    bail!("--config and --resume: a resumed run keeps the settings of its checkpoint");
                }
                let state = CheckpointState::read(path)?;
                if !state.resumable() {
                    bail!(
                        "{}: written before checkpoints kept the optimiser state; it evaluates, but training \
                         cannot continue from it",
                        path.display()
                    );
                }
                Some(state)
            }
            None => None,
        };
        let mut config = match &resumed {
            Some(state) => state.config.clone(),
            None => load_config(request.config.as_deref())?,
        }
        .with_downscale(request.downscale)?;
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
        if let Some(state) = resumed.as_ref().filter(|s| s.step >= config.train.steps) {
            bail!(
                "{}: the checkpoint is at step {}, at or past the last step {} (give a larger --steps)",
                state.path.display(),
                state.step,
                config.train.steps
            );
        }
        let data_dir = data_dir(request.data.as_deref())?;
        let dataset = Arc::new(load_data(&data_dir, &config)?);
        Ok(Self { config, data_dir, dataset, resumed, fault: request.fault })
    }

    /// Builds the trainer on `gpu` and opens the output folder: `config.toml` written, `metrics.jsonl`
    /// created (or appended to when resuming).
    pub fn start(self, gpu: Arc<Gpu>, out: &Path) -> Result<Started> {
        let Self { config, data_dir, dataset, resumed, fault } = self;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let config_path = out.join("config.toml");
        write_atomic(&config_path, config.to_toml().as_bytes())
            .with_context(|| format!("{}: cannot write", config_path.display()))?;
        let metrics_path = out.join("metrics.jsonl");
        let metrics_error = || format!("{}: cannot write", metrics_path.display());
        let started = match resumed {
            Some(state) => {
                let elapsed_before = state.elapsed_s;
                let mut trainer = state.into_trainer(gpu.clone(), &dataset)?;
                // the settings this run trains with: the checkpoint's, with this run's step limit and downscale
                trainer.config = config;
                let metrics = MetricsLog::append_to(&metrics_path).with_context(metrics_error)?;
                Started { trainer, metrics, elapsed_before }
            }
            None => {
                let trainer = Trainer::new(gpu.clone(), config, &dataset)?;
                let metrics = MetricsLog::create(&metrics_path).with_context(metrics_error)?;
                Started { trainer, metrics, elapsed_before: 0.0 }
            }
        };
        let mut started = started;
        started.trainer.fault = fault;
        let trainer = &started.trainer;
        log::info!(
            "{}: {} training views, octree nodes per depth {:?}, {} parameters in {} page(s), adapter {}",
            data_dir.display(),
            dataset.train.len(),
            trainer.octree.depth_counts(),
            trainer.n_params(),
            trainer.model.paging.n_pages,
            gpu.info.name
        );
        Ok(started)
    }
}

/// The metrics.jsonl line of a setting changed while training.
pub fn setting_event(key: &str, value: f64, step: u32) -> serde_json::Value {
    json!({ "event": "set", "step": step, "key": key, "value": value })
}

/// The training run: steps until `steps` or `max_seconds`, then a checkpoint and the evaluation.
/// With `resume`, the checkpoint's run continues: its settings, step counter, optimiser state and
/// clock; `steps` is then the step to stop at and `max_seconds` the seconds to add.
pub fn train(request: &TrainRequest) -> Result<EvalReport> {
    let prepared = Prepared::load(request)?;
    let (config, dataset) = (prepared.config.clone(), prepared.dataset.clone());
    let gpu = Arc::new(Gpu::new(&request.gpu)?);
    let Started { trainer, mut metrics, elapsed_before } = prepared.start(gpu, &request.out)?;
    let metrics_path = metrics.path().to_path_buf();
    let metrics_error = || format!("{}: cannot write", metrics_path.display());
    let bar = progress_bar(request, &config);
    let options = SessionOptions {
        max_steps: Some(config.train.steps),
        max_seconds: request.max_seconds.map(|s| s + elapsed_before),
        start_paused: false,
        elapsed_before,
        ..Default::default()
    };
    let session = Session::spawn(trainer, dataset.clone(), options);
    let mut elapsed = elapsed_before;
    let mut diverged = None;
    for event in session.events().iter() {
        match event {
            Event::Stats(stats) => {
                for event in stability_lines(&stats) {
                    metrics.append(&event).with_context(metrics_error)?;
                }
                let line = MetricsLine::new(&stats);
                metrics.append(&line).with_context(metrics_error)?;
                elapsed = stats.elapsed_s;
                if let Some(bar) = &bar {
                    bar.set_position(if request.max_seconds.is_some() && request.steps.is_none() {
                        (stats.elapsed_s - elapsed_before) as u64
                    } else {
                        u64::from(stats.step)
                    });
                    bar.set_message(format!(
                        "step {} loss {:.5} psnr {:.2} dB {:.0} rays/s",
                        stats.step, line.loss_total, line.psnr_train, stats.rays_per_s
                    ));
                }
                if !stats.loss.total.is_finite() {
                    diverged = Some(stats.step);
                    break;
                }
            }
            Event::Warning(warning) => log::warn!("{warning}"),
            Event::SettingChanged { key, value, step } => {
                metrics.append(&setting_event(&key, value, step)).with_context(metrics_error)?;
            }
            Event::Finished { .. } | Event::Failed(_) => break,
            _ => {}
        }
    }
    let trainer = session.join()?;
    if let Some(step) = diverged {
        bail!("training diverged at step {step}: the loss is not finite");
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    save_trainer_checkpoint(&trainer, &request.out.join(CHECKPOINT_TENSORS), elapsed)?;
    let (split, views) = eval_split(&dataset);
    let renders = request.out.join("renders");
    let report = evaluate(&trainer, views, split, request.eval_views, elapsed, Some(&renders))?;
    let eval_path = request.out.join("eval.json");
    write_atomic(&eval_path, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("{}: cannot write", eval_path.display()))?;
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
        levels: None,
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

/// Format name in a checkpoint's metadata.
pub const CHECKPOINT_FORMAT: &str = "infnerf-checkpoint-2";

/// Writes a resumable checkpoint to `path` in one atomic write: parameters, Adam moments and the
/// occupancy grid as tensors; settings, step, tree, RNG state and training seconds as metadata.
pub fn save_trainer_checkpoint(trainer: &Trainer, path: &Path, elapsed_s: f64) -> Result<()> {
    let model = &trainer.model;
    let (gpu, paging) = (&trainer.gpu, &model.paging);
    let params = Model::read_paged(gpu, &model.params, paging)?;
    let m1 = Model::read_paged(gpu, &model.m1, paging)?;
    let m2 = Model::read_paged(gpu, &model.m2, paging)?;
    let occupancy: Vec<f32> = gpu.read(&model.occupancy, trainer.occupancy_cells() as usize)?;
    let mean: Vec<f32> = gpu.read(&model.occupancy_mean, 1)?;
    // the adversarial term's discriminator, with its Adam moments and update count
    let discriminator = match &trainer.discriminator {
        Some(d) => {
            let read = |buffer: &wgpu::Buffer| gpu.read::<f32>(buffer, d.count as usize);
            Some((read(&d.params)?, read(&d.m1)?, read(&d.m2)?, d.updates.get()))
        }
        None => None,
    };
    let metadata = json!({
        "format": CHECKPOINT_FORMAT,
        "step": trainer.step,
        "elapsed_s": elapsed_s,
        "rng": trainer.rng.0.to_string(),
        "balancer": trainer.balancer,
        "lr_state": trainer.lr_state,
        "config": trainer.config,
        "node_params": trainer.layout.node_params,
        "tree": trainer.octree.to_layout_json(),
        "discriminator_updates": discriminator.as_ref().map(|d| d.3),
        "loss_scale": trainer.loss_scale_state()?,
    });
    let shape = vec![paging.n_nodes as usize, paging.node_params as usize];
    let mut tensors: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("params", shape.clone(), &params),
        ("adam_m1", shape.clone(), &m1),
        ("adam_m2", shape, &m2),
        ("occupancy", vec![occupancy.len()], &occupancy),
        ("occupancy_mean", vec![1], &mean),
    ];
    if let Some((params, m1, m2, _)) = &discriminator {
        for (name, values) in DISCRIMINATOR_TENSORS.iter().zip([params, m1, m2]) {
            tensors.push((name, vec![values.len()], values));
        }
    }
    save_checkpoint(path, &tensors, &metadata)
}

/// The checkpoint's tensors of the adversarial term's discriminator: parameters, Adam's moments.
const DISCRIMINATOR_TENSORS: [&str; 3] = ["discriminator", "discriminator_m1", "discriminator_m2"];

/// A checkpoint read back: everything a trainer needs to continue where it stopped.
pub struct CheckpointState {
    pub path: PathBuf,
    pub config: Config,
    pub octree: Octree,
    pub step: u32,
    pub elapsed_s: f64,
    /// None for checkpoints older than the resumable format (they evaluate but cannot resume).
    pub rng: Option<u64>,
    pub params: Vec<f32>,
    pub moments: Option<(Vec<f32>, Vec<f32>)>,
    pub occupancy: Option<(Vec<f32>, f32)>,
    /// The loss balancer's history (absent in older checkpoints: it starts empty).
    pub balancer: Option<Balancer>,
    /// The learning rate's plateau and restore state (absent in older checkpoints: none so far).
    pub lr_state: Option<crate::config::LrState>,
    /// The adversarial term's discriminator: parameters, Adam moments, updates (absent without
    /// one, and in older checkpoints: a resumed run then starts a new one).
    pub discriminator: Option<([Vec<f32>; 3], u32)>,
    /// Mixed precision: the loss scale's state (absent in f32 and in older checkpoints: a resumed
    /// run starts from `train.loss_scale_init`).
    pub loss_scale: Option<crate::trainer::LossScaleState>,
}

impl CheckpointState {
    pub fn read(path: &Path) -> Result<Self> {
        let (tensors, metadata) = load_checkpoint(path)?;
        let name = path.display();
        let config: Config = serde_json::from_value(metadata.get("config").cloned().unwrap_or_default())
            .with_context(|| format!("{name}: metadata field `config` is missing or malformed"))?;
        config.validate(&format!("{name} (config)"))?;
        let tree = metadata.get("tree").with_context(|| format!("{name}: metadata field `tree` is missing"))?;
        let octree = Octree::from_layout_json(tree).with_context(|| format!("{name}: metadata field `tree`"))?;
        let step = metadata
            .get("step")
            .and_then(|s| s.as_u64())
            .and_then(|s| u32::try_from(s).ok())
            .with_context(|| format!("{name}: metadata field `step` is missing or not a step number"))?;
        let elapsed_s = metadata.get("elapsed_s").and_then(|s| s.as_f64()).unwrap_or(0.0);
        let rng = match metadata.get("rng") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .with_context(|| format!("{name}: metadata field `rng` is not a number in a string"))?,
            ),
        };
        let layout = crate::field::FieldLayout::new(&config.field);
        let n = octree.nodes.len() * layout.node_params as usize;
        let packed = octree.nodes.len() * layout.packed_params() as usize;
        let find = |wanted: &str| tensors.iter().find(|(t, _, _)| t == wanted).map(|(_, _, v)| v);
        let tensor = |wanted: &str, len: usize| -> Result<Option<Vec<f32>>> {
            match find(wanted) {
                None => Ok(None),
                Some(values) if values.len() == len => Ok(Some(values.clone())),
                // parameters or moments from before the node blocks were padded to whole vec4s
                Some(values) if len == n && values.len() == packed => Ok(Some(layout.pad_blocks(values))),
                Some(values) => {
                    bail!("{name}: tensor `{wanted}` holds {} values, the tree and config need {len}", values.len())
                }
            }
        };
        let params = tensor("params", n)?.with_context(|| format!("{name}: no tensor named `params`"))?;
        let moments = match (tensor("adam_m1", n)?, tensor("adam_m2", n)?) {
            (Some(m1), Some(m2)) => Some((m1, m2)),
            _ => None,
        };
        let cells = config.train.occupancy_resolution.max(1).pow(3) as usize;
        let occupancy = match (tensor("occupancy", cells)?, tensor("occupancy_mean", 1)?) {
            (Some(grid), Some(mean)) => Some((grid, mean[0])),
            _ => None,
        };
        let balancer = match metadata.get("balancer") {
            None => None,
            Some(value) => Some(
                serde_json::from_value(value.clone())
                    .with_context(|| format!("{name}: metadata field `balancer` is malformed"))?,
            ),
        };
        let lr_state = match metadata.get("lr_state") {
            None => None,
            Some(value) => Some(
                serde_json::from_value(value.clone())
                    .with_context(|| format!("{name}: metadata field `lr_state` is malformed"))?,
            ),
        };
        let loss_scale: Option<crate::trainer::LossScaleState> = match metadata.get("loss_scale") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => {
                let state: crate::trainer::LossScaleState = serde_json::from_value(value.clone())
                    .with_context(|| format!("{name}: metadata field `loss_scale` is malformed"))?;
                if !(state.scale >= 1.0 && state.scale <= crate::config::MAX_LOSS_SCALE) {
                    bail!("{name}: metadata field `loss_scale`: scale {} is outside [1, 2^24]", state.scale);
                }
                Some(state)
            }
        };
        let discriminator = match DISCRIMINATOR_TENSORS.map(find) {
            [Some(params), Some(m1), Some(m2)] => {
                if m1.len() != params.len() || m2.len() != params.len() {
                    bail!("{name}: tensors `discriminator_m1` and `discriminator_m2` must match `discriminator`");
                }
                let updates = metadata
                    .get("discriminator_updates")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|u| u32::try_from(u).ok())
                    .with_context(|| format!("{name}: metadata field `discriminator_updates` is missing"))?;
                Some(([params.clone(), m1.clone(), m2.clone()], updates))
            }
            _ => None,
        };
        Ok(Self {
            path: path.to_path_buf(),
            config,
            octree,
            step,
            elapsed_s,
            rng,
            params,
            moments,
            occupancy,
            balancer,
            lr_state,
            discriminator,
            loss_scale,
        })
    }

    /// A trainer in this state (for training, the state must be complete: moments and RNG).
    pub fn into_trainer(self, gpu: Arc<Gpu>, dataset: &Dataset) -> Result<Trainer> {
        let mut trainer = Trainer::with_state(gpu, self.config, dataset, self.octree, &self.params)?;
        let model = &trainer.model;
        if let Some((m1, m2)) = &self.moments {
            Model::write_paged(&trainer.gpu, &model.m1, &model.paging, m1)?;
            Model::write_paged(&trainer.gpu, &model.m2, &model.paging, m2)?;
        }
        if let Some((grid, mean)) = &self.occupancy {
            trainer.gpu.write(&model.occupancy, grid);
            trainer.gpu.write(&model.occupancy_mean, &[*mean]);
        }
        trainer.step = self.step;
        if let Some(rng) = self.rng {
            trainer.rng = SplitMix64(rng);
        }
        if let Some(balancer) = self.balancer {
            trainer.balancer = balancer;
        }
        if let Some(lr_state) = self.lr_state {
            trainer.lr_state = lr_state;
        }
        if let Some(state) = &self.loss_scale {
            trainer.set_loss_scale_state(state);
        }
        if let (Some(disc), Some(([params, m1, m2], updates))) = (&trainer.discriminator, &self.discriminator) {
            if params.len() != disc.count as usize {
                bail!(
                    "{}: tensor `discriminator` holds {} values, the discriminator has {}",
                    self.path.display(),
                    params.len(),
                    disc.count
                );
            }
            trainer.gpu.write(&disc.params, params);
            trainer.gpu.write(&disc.m1, m1);
            trainer.gpu.write(&disc.m2, m2);
            disc.updates.set(*updates);
        }
        Ok(trainer)
    }

    /// Whether training can continue from it exactly (optimiser state and RNG saved).
    pub fn resumable(&self) -> bool {
        self.moments.is_some() && self.rng.is_some() && self.occupancy.is_some()
    }
}

/// Rebuilds a trainer from a checkpoint written by `save_trainer_checkpoint`.
pub fn load_trainer(checkpoint: &Path, dataset: &Dataset, gpu: Arc<Gpu>) -> Result<Trainer> {
    CheckpointState::read(checkpoint)?.into_trainer(gpu, dataset)
}

/// `infnerf eval`: a checkpoint on one split of a dataset.
pub fn eval_checkpoint(
    checkpoint: &Path,
    data: &Path,
    split: &str,
    views: Option<usize>,
    downscale: Option<u32>,
    levels: bool,
    gpu: &GpuOptions,
) -> Result<EvalReport> {
    let mut state = CheckpointState::read(checkpoint)?;
    state.config = state.config.with_downscale(downscale)?;
    let dataset = load_data(data, &state.config)?;
    let chosen: &[View] = match split {
        "test" => &dataset.test,
        "val" => &dataset.val,
        "train" => &dataset.train,
        other => bail!("--split {other:?}: expected test, val or train"),
    };
    let trainer = state.into_trainer(Arc::new(Gpu::new(gpu)?), &dataset)?;
    let started = Instant::now();
    let mut report = evaluate(&trainer, chosen, split, views, 0.0, None)?;
    if levels {
        let picked = evenly_spaced(chosen.len(), views);
        report.levels = Some(crate::levels::evaluate_levels(&trainer, &dataset, data, split, chosen, &picked)?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
