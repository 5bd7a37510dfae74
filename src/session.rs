//! The trainer on a thread of its own, driven by messages: commands in (pause, resume, step, change a
//! setting, render, evaluate, save, stop), events out (step statistics, renders, evaluations,
//! warnings). The headless `train` command is one consumer of the events; the viewer is another.
//!
//! Between two training steps the thread handles every waiting command, then renders chunks of the
//! oldest render requests for up to `SessionOptions::render_slice` (at least one chunk), then trains one step. A
//! render therefore waits for at most one slice and the few steps already queued on the device
//! (`trainer::MAX_IN_FLIGHT`), never for a long queue, and it uses buffers of its own, so it cannot
//! disturb the step in flight. How often to render is the consumer's choice: the viewer spaces its
//! refreshes so that renders take a small share of the time while the camera rests.

use crate::data::{Camera, Dataset};
use crate::run::{eval_split, evaluate, EvalReport};
use crate::stability::StabilityEvent;
use crate::trainer::{LossStats, RenderJob, Rendered, Trainer};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The viewer's rendering time between two training steps while renders wait: a render of a few
/// chunks (while the camera moves) arrives within a step or two, and training still gets its turn.
pub const RENDER_SLICE: Duration = Duration::from_millis(100);

/// What the trainer thread is asked to do.
#[derive(Clone, Debug)]
pub enum Command {
    /// Stop training after the current step (renders and other commands still run).
    Pause,
    Resume,
    /// Train this many steps, then pause (with a statistics event at the end); `Step(0)` pauses.
    Step(u32),
    /// Change a setting that may change while training (`config::LIVE_SETTINGS`); it applies from
    /// the next step on.
    Set {
        key: String,
        value: f64,
    },
    /// Render `camera` at tree cut `cut` (its width and height are the resolution).
    Render {
        id: u64,
        camera: Camera,
        cut: u32,
    },
    /// PSNR and SSIM on the evaluation split (all views, or `views` evenly spaced ones).
    Evaluate {
        views: Option<usize>,
    },
    /// Write a resumable checkpoint.
    Save {
        path: PathBuf,
    },
    /// End the thread; `Session::join` returns the trainer.
    Stop,
}

/// What the trainer thread reports.
#[derive(Clone, Debug)]
pub enum Event {
    Stats(Box<StepStats>),
    Rendered {
        id: u64,
        cut: u32,
        step: u32,
        image: Rendered,
    },
    Evaluated(EvalReport),
    Saved {
        path: PathBuf,
        step: u32,
    },
    SettingChanged {
        key: String,
        value: f64,
        step: u32,
    },
    Paused {
        step: u32,
    },
    Resumed {
        step: u32,
    },
    /// The step or time limit was reached; training stops (commands are still served; `Step` and
    /// `Resume` answer with a warning).
    Finished {
        step: u32,
    },
    Warning(String),
    /// An error ended the thread.
    Failed(String),
}

/// Statistics of the steps since the last such event.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub step: u32,
    /// Seconds spent training (paused time excluded), since the run's first step.
    pub elapsed_s: f64,
    pub loss: LossStats,
    pub rays_per_s: f64,
    /// The learning-rate schedule's factor and the two groups' rates at `step`.
    pub lr: f64,
    pub lr_hash: f64,
    pub lr_mlp: f64,
    pub gpu_bytes: u64,
    /// The most device bytes allocated so far, and the rays that go through the passes at once (a
    /// step's chunk: `train.accumulate_steps` and `train.memory_budget_mb` set it).
    pub peak_gpu_bytes: u64,
    pub chunk_rays: u32,
    /// Whether the backward recomputes the field (`train.recompute_backward`) or reads the
    /// activations the forward stored.
    pub recompute_backward: bool,
    /// The number formats the trainer runs in: `train.precision`, or f32 where the adapter has no
    /// SHADER_F16.
    pub precision: crate::config::Precision,
    /// Dispatches of the last step.
    pub dispatches: u32,
    pub rays_per_step: u32,
    /// Sample slots per step of the trained samples (the phase's samples per ray x rays).
    pub samples_per_step: u64,
    /// How the last step placed its samples (SPEC §5).
    pub sampling_phase: crate::config::SamplingPhase,
    /// The learning rate's plateau reductions and restore cuts so far.
    pub lr_state: crate::config::LrState,
    /// The step of the last in-memory snapshot.
    pub last_snapshot_step: Option<u32>,
}

/// Limits and starting state of a session.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Finish when the step counter reaches this (None: never).
    pub max_steps: Option<u32>,
    /// Finish after this many seconds of training (None: never).
    pub max_seconds: Option<f64>,
    pub start_paused: bool,
    /// Training seconds of the run before this session (a resumed run continues its clock).
    pub elapsed_before: f64,
    /// Rendering time between two training steps while renders wait (at least one chunk; zero:
    /// one chunk per step).
    pub render_slice: Duration,
}

/// A running trainer thread.
pub struct Session {
    commands: Sender<Command>,
    events: Receiver<Event>,
    thread: JoinHandle<Result<Trainer>>,
}

impl Session {
    /// Moves `trainer` onto a thread of its own. `dataset` serves evaluations.
    pub fn spawn(trainer: Trainer, dataset: Arc<Dataset>, options: SessionOptions) -> Self {
        let (commands, command_rx) = channel();
        let (event_tx, events) = channel();
        let thread = std::thread::Builder::new()
            .name("trainer".into())
            .spawn(move || {
                let mut worker = Worker::new(trainer, dataset, options, event_tx.clone());
                match worker.run(command_rx) {
                    Ok(()) => Ok(worker.trainer),
                    Err(error) => {
                        let _ = event_tx.send(Event::Failed(format!("{error:#}")));
                        Err(error)
                    }
                }
            })
            .expect("spawning the trainer thread");
        Self { commands, events, thread }
    }

    /// Sends a command (ignored once the thread has ended).
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// A sender for commands, for other threads.
    pub fn commander(&self) -> Sender<Command> {
        self.commands.clone()
    }

    /// Stops the thread and returns the trainer.
    pub fn join(self) -> Result<Trainer> {
        let _ = self.commands.send(Command::Stop);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the trainer thread panicked"),
        }
    }
}

struct Worker {
    trainer: Trainer,
    dataset: Arc<Dataset>,
    options: SessionOptions,
    events: Sender<Event>,
    running: bool,
    /// Steps left before pausing again (from `Command::Step`).
    stepping: Option<u32>,
    finished: bool,
    renders: std::collections::VecDeque<(u64, RenderJob)>,
    /// Training time before the current stretch of steps, and when that stretch began.
    trained_s: f64,
    stretch: Option<Instant>,
    last_stats: (u32, f64),
}

impl Worker {
    fn new(trainer: Trainer, dataset: Arc<Dataset>, options: SessionOptions, events: Sender<Event>) -> Self {
        let running = !options.start_paused;
        let trained_s = options.elapsed_before;
        let step = trainer.step;
        Self {
            trainer,
            dataset,
            running,
            stepping: None,
            finished: false,
            renders: Default::default(),
            trained_s,
            stretch: None,
            last_stats: (step, trained_s),
            options,
            events,
        }
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn elapsed(&self) -> f64 {
        self.trained_s + self.stretch.map_or(0.0, |s| s.elapsed().as_secs_f64())
    }

    fn training(&self) -> bool {
        !self.finished && (self.running || self.stepping.is_some_and(|n| n > 0))
    }

    fn run(&mut self, commands: Receiver<Command>) -> Result<()> {
        loop {
            // every waiting command; block while there is nothing else to do
            loop {
                let idle = !self.training() && self.renders.is_empty();
                let command = if idle {
                    self.pause_clock();
                    match commands.recv_timeout(Duration::from_millis(200)) {
                        Ok(c) => Some(c),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                } else {
                    match commands.try_recv() {
                        Ok(c) => Some(c),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => return Ok(()),
                    }
                };
                match command {
                    Some(Command::Stop) => {
                        self.pause_clock();
                        return Ok(());
                    }
                    Some(command) => self.handle(command)?,
                    None if idle => continue,
                    None => break,
                }
            }
            let slice = Instant::now();
            while let Some((id, job)) = self.renders.front_mut() {
                self.trainer.render_chunk(job)?;
                if job.done() {
                    let (id, job) = (*id, self.renders.pop_front().expect("front").1);
                    let cut = job.cut;
                    self.emit(Event::Rendered { id, cut, step: self.trainer.step, image: job.finish() });
                }
                if slice.elapsed() >= self.options.render_slice {
                    break;
                }
            }
            if self.training() {
                self.train_one()?;
            }
        }
    }

    fn pause_clock(&mut self) {
        if let Some(started) = self.stretch.take() {
            self.trained_s += started.elapsed().as_secs_f64();
        }
    }

    fn train_one(&mut self) -> Result<()> {
        if self.stretch.is_none() {
            self.stretch = Some(Instant::now());
        }
        self.trainer.step()?;
        let step = self.trainer.step;
        if let Some(n) = self.stepping.as_mut() {
            *n = n.saturating_sub(1);
        }
        let limit = self.options.max_steps.is_some_and(|m| step >= m)
            || self.options.max_seconds.is_some_and(|s| self.elapsed() >= s);
        let single_step_done = self.stepping == Some(0);
        if step.is_multiple_of(self.trainer.config.train.log_every) || limit || single_step_done {
            self.send_stats()?;
        }
        if single_step_done {
            self.stepping = None;
            self.pause_clock();
            self.emit(Event::Paused { step });
        }
        if limit {
            self.finished = true;
            self.stepping = None;
            self.pause_clock();
            self.emit(Event::Finished { step });
        }
        Ok(())
    }

    fn send_stats(&mut self) -> Result<()> {
        let loss = self.trainer.read_stats()?;
        let step = self.trainer.step;
        let elapsed = self.elapsed();
        let (last_step, last_elapsed) = self.last_stats;
        let rays_per_step = self.trainer.rays_per_step();
        let rays_per_s =
            f64::from(step.saturating_sub(last_step)) * f64::from(rays_per_step) / (elapsed - last_elapsed).max(1e-9);
        self.last_stats = (step, elapsed);
        let t = &self.trainer.config.train;
        let lr = f64::from(self.trainer.lr_factor(step));
        if !loss.total.is_finite() {
            self.emit(Event::Warning(format!("step {step}: the loss is not finite")));
        }
        for event in &loss.events {
            if let StabilityEvent::Restore { from_step, anomalies_in_a_row, lr_restore_factor, .. } = event {
                self.emit(Event::Warning(format!(
                    "step {step}: {anomalies_in_a_row} anomalies in a row: restored the snapshot of step \
                     {from_step}, learning rate x{lr_restore_factor}"
                )));
            }
        }
        if loss.sanitized_total() > 0 {
            let counts: Vec<String> =
                loss.sanitized.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
            let message = format!("step {step}: non-finite values replaced by 0 ({})", counts.join(", "));
            self.emit(Event::Warning(message));
        }
        let stats = StepStats {
            step,
            elapsed_s: elapsed,
            rays_per_s,
            lr,
            lr_hash: lr * f64::from(t.lr_hash),
            lr_mlp: lr * f64::from(t.lr_mlp),
            gpu_bytes: self.trainer.gpu.allocated_bytes(),
            peak_gpu_bytes: self.trainer.gpu.peak_bytes(),
            chunk_rays: self.trainer.chunk_patches * t.patch_size * t.patch_size,
            recompute_backward: t.recompute_backward,
            precision: self.trainer.precision(),
            dispatches: self.trainer.last_dispatches,
            rays_per_step,
            samples_per_step: u64::from(rays_per_step) * u64::from(t.samples_per_ray_at(step)),
            sampling_phase: t.sampling_phase(step.saturating_sub(1)),
            lr_state: self.trainer.lr_state.clone(),
            last_snapshot_step: self.trainer.snapshot.as_ref().map(|s| s.step),
            loss,
        };
        self.emit(Event::Stats(Box::new(stats)));
        Ok(())
    }

    fn handle(&mut self, command: Command) -> Result<()> {
        let step = self.trainer.step;
        match command {
            Command::Pause => {
                self.running = false;
                self.stepping = None;
                self.pause_clock();
                self.emit(Event::Paused { step });
            }
            Command::Resume | Command::Step(_) if self.finished => {
                let message =
                    format!("training reached its step limit or time limit at step {step}: {command:?} ignored");
                self.emit(Event::Warning(message));
            }
            Command::Resume => {
                self.running = true;
                self.emit(Event::Resumed { step });
            }
            Command::Step(0) => {
                // nothing to train: paused at once, as after any Step
                self.running = false;
                self.stepping = None;
                self.pause_clock();
                self.emit(Event::Paused { step });
            }
            Command::Step(n) => {
                self.running = false;
                self.stepping = Some(n);
            }
            Command::Set { key, value } => match self.trainer.config.set_live(&key, value) {
                Ok(()) => {
                    // the loss or the gradient may change level: the detector learns it again
                    self.trainer.guard_reset = true;
                    self.emit(Event::SettingChanged { key, value, step })
                }
                Err(error) => self.emit(Event::Warning(error.to_string())),
            },
            Command::Render { id, camera, cut } => {
                let job = self.trainer.render_job(&camera, cut);
                self.renders.push_back((id, job));
            }
            Command::Evaluate { views } => {
                self.pause_clock();
                let (split, chosen) = eval_split(&self.dataset);
                let report = evaluate(&self.trainer, chosen, split, views, self.elapsed(), None)?;
                self.emit(Event::Evaluated(report));
            }
            Command::Save { path } => {
                self.pause_clock();
                crate::run::save_trainer_checkpoint(&self.trainer, &path, self.elapsed())?;
                self.emit(Event::Saved { path, step });
            }
            Command::Stop => unreachable!("handled by the loop"),
        }
        Ok(())
    }
}
