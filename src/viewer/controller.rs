//! The viewer's side of the trainer thread, without any UI: it sends the commands the window's
//! buttons, keys and sliders stand for, and turns the thread's events into metrics.jsonl lines, the
//! plots' history and the status line. Tests drive it as the window does.

use super::history::History;
use crate::config::{Config, LIVE_SETTINGS};
use crate::data::{Camera, Dataset};
use crate::gpu::Gpu;
use crate::io::{write_atomic, MetricsLog, CHECKPOINT_TENSORS};
use crate::octree::Octree;
use crate::run::{setting_event, stability_lines, CheckpointState, MetricsLine};
use crate::session::{Command, Event, Session, SessionOptions};
use crate::trainer::{Rendered, Trainer};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the status line shows.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub step: u32,
    pub rays_per_s: f64,
    pub elapsed_s: f64,
    pub gpu_bytes: u64,
    pub psnr_train: f64,
    /// Training (not paused, not finished).
    pub training: bool,
    pub finished: bool,
    /// Loss terms that cannot run (weight held at 0), and why (e.g. LPIPS without its weights).
    pub unavailable: std::collections::BTreeMap<String, String>,
    /// How the last steps placed their samples, and the field's evaluations per ray (SPEC §5).
    pub sampling_phase: &'static str,
    pub evaluated_per_ray: f64,
    /// The number formats in use, and the loss scale (mixed precision; 1 in f32).
    pub precision: &'static str,
    pub loss_scale: f64,
}

/// A render that arrived.
pub struct Arrival {
    pub id: u64,
    pub cut: u32,
    pub step: u32,
    pub image: Rendered,
}

pub struct Controller {
    session: Option<Session>,
    pub gpu: Arc<Gpu>,
    pub dataset: Arc<Dataset>,
    /// The settings as edited (the trainer's copy follows at its next step).
    pub config: Config,
    /// The settings the run started with ("reset to config").
    pub base_config: Config,
    metrics: MetricsLog,
    pub out: PathBuf,
    pub history: History,
    pub status: Status,
    /// Warnings and notices, newest last.
    pub messages: Vec<String>,
    options: SessionOptions,
    next_id: u64,
    /// The trainer's tree (fixed while it trains) and the parameters of one node.
    pub octree: Octree,
    pub node_params: u64,
    /// The learning rate's plateau and restore state at the last statistics (the planned curve).
    pub lr_state: crate::config::LrState,
}

impl Controller {
    /// Starts `trainer` on its thread (paused if `options.start_paused`).
    pub fn new(
        trainer: Trainer,
        dataset: Arc<Dataset>,
        metrics: MetricsLog,
        out: &Path,
        history: History,
        options: SessionOptions,
    ) -> Self {
        let config = trainer.config.clone();
        let status = Status {
            step: trainer.step,
            elapsed_s: options.elapsed_before,
            training: !options.start_paused,
            sampling_phase: trainer.config.train.sampling_phase(trainer.step).name(),
            ..Default::default()
        };
        let gpu = trainer.gpu.clone();
        let octree = trainer.octree.clone();
        let node_params = u64::from(trainer.layout.node_params);
        let session = Session::spawn(trainer, dataset.clone(), options.clone());
        Self {
            session: Some(session),
            gpu,
            dataset,
            base_config: config.clone(),
            config,
            metrics,
            out: out.to_path_buf(),
            history,
            status,
            messages: Vec::new(),
            options,
            next_id: 1,
            octree,
            node_params,
            lr_state: Default::default(),
        }
    }

    fn send(&self, command: Command) {
        if let Some(session) = &self.session {
            session.send(command);
        }
    }

    fn note(&mut self, message: String) {
        log::info!("{message}");
        self.messages.push(message);
    }

    /// Handles every waiting event: statistics and settings changes go to metrics.jsonl and the
    /// history; renders are returned.
    pub fn poll(&mut self) -> Result<Vec<Arrival>> {
        let mut arrivals = Vec::new();
        let events: Vec<Event> = match &self.session {
            Some(session) => session.events().try_iter().collect(),
            None => Vec::new(),
        };
        let path = self.metrics.path().to_path_buf();
        let cannot_write = || format!("{}: cannot write", path.display());
        for event in events {
            match event {
                Event::Stats(stats) => {
                    for event in stability_lines(&stats) {
                        self.metrics.append(&event).with_context(cannot_write)?;
                        self.history.add_line(&event);
                    }
                    self.lr_state = stats.lr_state.clone();
                    let line = MetricsLine::new(&stats);
                    self.metrics.append(&line).with_context(cannot_write)?;
                    self.history.add_line(&serde_json::to_value(&line)?);
                    self.status.step = stats.step;
                    self.status.rays_per_s = stats.rays_per_s;
                    self.status.elapsed_s = stats.elapsed_s;
                    self.status.gpu_bytes = stats.gpu_bytes;
                    self.status.psnr_train = line.psnr_train;
                    self.status.unavailable.clone_from(&line.unavailable);
                    self.status.sampling_phase = line.sampling_phase.name();
                    self.status.evaluated_per_ray = line.evaluated_per_ray;
                    self.status.precision = line.precision.name();
                    self.status.loss_scale = line.loss_scale;
                }
                Event::SettingChanged { key, value, step } => {
                    let event = setting_event(&key, value, step);
                    self.metrics.append(&event).with_context(cannot_write)?;
                    self.history.add_line(&event);
                }
                Event::Rendered { id, cut, step, image } => arrivals.push(Arrival { id, cut, step, image }),
                Event::Evaluated(report) => {
                    self.history.add_test_psnr(report.steps, report.psnr);
                    self.note(format!(
                        "step {}: test PSNR {:.2} dB, SSIM {:.3} on {} {} view(s)",
                        report.steps, report.psnr, report.ssim, report.views, report.split
                    ));
                }
                Event::Saved { path, step } => self.note(format!("step {step}: saved {}", path.display())),
                Event::Paused { step } => {
                    self.status.training = false;
                    self.status.step = self.status.step.max(step);
                }
                Event::Resumed { .. } => self.status.training = true,
                Event::Finished { step } => {
                    self.status.training = false;
                    self.status.finished = true;
                    self.note(format!("training finished at step {step}"));
                }
                Event::Warning(warning) => {
                    log::warn!("{warning}");
                    self.messages.push(warning);
                }
                Event::Failed(error) => {
                    self.status.training = false;
                    self.note(format!("the trainer stopped: {error}"));
                }
            }
        }
        Ok(arrivals)
    }

    /// Pauses a training run, or resumes a paused one.
    pub fn toggle_training(&mut self) {
        if self.status.training {
            self.send(Command::Pause);
        } else {
            self.send(Command::Resume);
        }
    }

    pub fn pause(&self) {
        self.send(Command::Pause);
    }

    /// Trains `steps` steps, then pauses.
    pub fn single_step(&self, steps: u32) {
        self.send(Command::Step(steps));
    }

    /// Changes a live setting: checked here first (so a bad value is refused at once and the
    /// edited settings stay valid), then sent to the trainer, which applies it from its next step
    /// and confirms it (a `set` event in metrics.jsonl).
    pub fn set(&mut self, key: &str, value: f64) -> Result<()> {
        self.config.set_live(key, value)?;
        self.send(Command::Set { key: key.to_string(), value });
        Ok(())
    }

    /// Every live setting back to the run's starting value.
    pub fn reset_settings(&mut self) -> Result<()> {
        for key in LIVE_SETTINGS {
            let (now, base) = (self.config.live(key), self.base_config.live(key));
            if let (Some(now), Some(base)) = (now, base) {
                if now.to_bits() != base.to_bits() {
                    self.set(key, base)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the edited settings as a TOML file that `--config` accepts.
    pub fn save_settings(&mut self, path: &Path) -> Result<()> {
        write_atomic(path, self.config.to_toml().as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
        self.note(format!("settings saved to {}", path.display()));
        Ok(())
    }

    /// Asks for a render of `camera` at tree cut `cut`; returns its id.
    pub fn render(&mut self, camera: Camera, cut: u32) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(Command::Render { id, camera, cut });
        id
    }

    /// PSNR and SSIM on `views` evenly spaced views of the evaluation split.
    pub fn evaluate(&self, views: usize) {
        self.send(Command::Evaluate { views: Some(views) });
    }

    /// Writes a resumable checkpoint (the thread confirms with a notice).
    pub fn save_snapshot(&self, path: &Path) {
        self.send(Command::Save { path: path.to_path_buf() });
    }

    /// The default snapshot file: the run's checkpoint.
    pub fn snapshot_path(&self) -> PathBuf {
        self.out.join(CHECKPOINT_TENSORS)
    }

    /// Replaces the training with the one saved in `path`: its settings, parameters, optimiser
    /// state, step counter and clock; it starts paused. The history keeps the curve up to there.
    pub fn load_snapshot(&mut self, path: &Path) -> Result<()> {
        let state = CheckpointState::read(path)?;
        if !state.resumable() {
            bail!(
                "{}: written before checkpoints kept the optimiser state; training cannot continue from it",
                path.display()
            );
        }
        if let Some(session) = self.session.take() {
            session.join()?;
        }
        let elapsed_before = state.elapsed_s;
        let mut config = state.config.clone();
        config.train.steps = config.train.steps.max(self.config.train.steps);
        let mut trainer = state.into_trainer(self.gpu.clone(), &self.dataset)?;
        trainer.config = config.clone();
        self.octree = trainer.octree.clone();
        self.node_params = u64::from(trainer.layout.node_params);
        self.status = Status { step: trainer.step, elapsed_s: elapsed_before, ..Default::default() };
        self.config = config.clone();
        self.base_config = config;
        let options = SessionOptions { start_paused: true, elapsed_before, max_seconds: None, ..self.options.clone() };
        self.session = Some(Session::spawn(trainer, self.dataset.clone(), options));
        self.note(format!("loaded {} at step {}: paused", path.display(), self.status.step));
        Ok(())
    }

    /// Stops the thread and writes the run's checkpoint, so closing the window loses nothing.
    pub fn shutdown(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let trainer = session.join()?;
        let path = self.snapshot_path();
        let elapsed = self.status.elapsed_s.max(self.options.elapsed_before);
        crate::run::save_trainer_checkpoint(&trainer, &path, elapsed)?;
        log::info!("step {}: saved {}", trainer.step, path.display());
        Ok(())
    }
}
