//! The trainer's command API (src/session.rs), driven from the test thread while the trainer runs
//! on its own: pausing and stepping, live settings, renders while training, saving, stopping.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use infnerf::config::Config;
use infnerf::data::{Camera, Dataset};
use infnerf::gpu::{Gpu, GpuOptions};
use infnerf::io::load_checkpoint;
use infnerf::run::{load_data, CheckpointState};
use infnerf::scene_gen::{make_scene, SceneOptions};
use infnerf::session::{Command, Event, Session, SessionOptions, StepStats};
use infnerf::trainer::Trainer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use temp_dir::TempDir;

/// Longest wait for an event; the slowest (a step with pipelines still compiling) takes a second.
const TIMEOUT: Duration = Duration::from_secs(120);

fn scene(tmp: &TempDir, config: &Config) -> Arc<Dataset> {
    let dir = tmp.0.join("scene");
    make_scene(&dir, &SceneOptions { width: 32, height: 32, train_views: 12, test_views: 2, seed: 5 }).unwrap();
    Arc::new(load_data(&dir, config).unwrap())
}

fn trainer(config: &Config, dataset: &Dataset) -> Trainer {
    let gpu = Arc::new(Gpu::new(&GpuOptions::default()).expect("a wgpu adapter (install mesa-vulkan-drivers)"));
    Trainer::new(gpu, config.clone(), dataset).unwrap()
}

/// A session and the events it sent so far.
struct Driver {
    session: Session,
}

impl Driver {
    fn send(&self, command: Command) {
        self.session.send(command);
    }

    /// Every event up to and including the first that `done` accepts (a failure or a timeout panics).
    fn until(&self, what: &str, done: impl Fn(&Event) -> bool) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            let event = self.session.events().recv_timeout(TIMEOUT).unwrap_or_else(|e| {
                panic!("waiting for {what}: {e}; events so far: {events:?}");
            });
            if let Event::Failed(error) = &event {
                panic!("the trainer thread failed while waiting for {what}: {error}");
            }
            let last = done(&event);
            events.push(event);
            if last {
                return events;
            }
        }
    }

    /// Saves a checkpoint and waits for it: (the step it says, its parameters).
    fn save(&self, path: &Path) -> (u32, Vec<f32>) {
        self.send(Command::Save { path: path.to_path_buf() });
        let events = self.until("Saved", |e| matches!(e, Event::Saved { .. }));
        let Some(Event::Saved { path: saved, step }) = events.last() else { unreachable!() };
        assert_eq!(saved, path);
        let (tensors, metadata) = load_checkpoint(path).unwrap();
        assert_eq!(metadata["step"].as_u64(), Some(u64::from(*step)));
        let params = tensors.into_iter().find(|(n, _, _)| n == "params").unwrap().2;
        (*step, params)
    }

    /// Sets a live setting and waits for its confirmation.
    fn set(&self, key: &str, value: f64, step: u32) {
        self.send(Command::Set { key: key.into(), value });
        let events = self.until(key, |e| matches!(e, Event::SettingChanged { .. } | Event::Warning(_)));
        let expected = Event::SettingChanged { key: key.into(), value, step };
        assert_eq!(format!("{:?}", events.last().unwrap()), format!("{expected:?}"));
    }
}

fn stats(events: &[Event]) -> Vec<&StepStats> {
    events.iter().filter_map(|e| if let Event::Stats(s) = e { Some(&**s) } else { None }).collect()
}

fn max_change(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A camera looking at the scene at `width` x `height` (a test view's pose, its focal length scaled).
fn camera(dataset: &Dataset, width: u32, height: u32) -> Camera {
    let mut camera = dataset.test[0].camera;
    let s = width as f32 / camera.width as f32;
    (camera.fx, camera.fy, camera.cx, camera.cy) =
        (camera.fx * s, camera.fy * s, width as f32 / 2.0, height as f32 / 2.0);
    (camera.width, camera.height) = (width, height);
    camera
}

#[test]
fn commands_drive_the_trainer() {
    let tmp = TempDir::new("session");
    let mut config = Config::tiny();
    config.train.log_every = 100;
    let dataset = scene(&tmp, &config);
    let driver = Driver {
        session: Session::spawn(
            trainer(&config, &dataset),
            dataset.clone(),
            SessionOptions { start_paused: true, ..Default::default() },
        ),
    };
    let checkpoint = |name: &str| -> PathBuf { tmp.0.join(format!("{name}.safetensors")) };

    // paused from the start: nothing happens until asked
    std::thread::sleep(Duration::from_millis(300));
    let (step, initial) = driver.save(&checkpoint("initial"));
    assert_eq!(step, 0);
    assert!(driver.session.events().try_recv().is_err(), "a paused session sends nothing unasked");

    // Step(n) trains exactly n steps, reports them and pauses
    driver.send(Command::Step(3));
    let events = driver.until("Paused", |e| matches!(e, Event::Paused { .. }));
    assert_eq!(events.len(), 2, "{events:?}");
    let s = stats(&events)[0];
    assert_eq!((s.step, s.loss.steps), (3, 3));
    assert!(s.loss.total > 0.0 && s.loss.total.is_finite() && s.loss.mse > 0.0, "{:?}", s.loss);
    assert!(matches!(events[1], Event::Paused { step: 3 }));
    let (step, stepped) = driver.save(&checkpoint("stepped"));
    assert_eq!(step, 3);
    let trained_change = max_change(&initial, &stepped);
    assert!(trained_change > 1e-3, "3 steps changed the parameters by at most {trained_change}");

    // lambda_mse = 0: no gradient, so (sparse Adam) no parameter moves
    driver.set("loss.lambda_mse", 0.0, 3);
    driver.send(Command::Step(2));
    let events = driver.until("Paused", |e| matches!(e, Event::Paused { .. }));
    let s = stats(&events)[0];
    assert_eq!((s.step, s.loss.steps), (5, 2));
    assert!(s.loss.total == 0.0 && s.loss.mse > 0.0, "the weighted loss is 0, the error is not: {:?}", s.loss);
    let (step, unweighted) = driver.save(&checkpoint("unweighted"));
    assert_eq!(step, 5);
    assert_eq!(max_change(&stepped, &unweighted), 0.0, "steps without a loss moved parameters");

    // learning rates: a step at 1e-9 moves parameters by far less than one at the usual rates
    driver.set("loss.lambda_mse", 1.0, 5);
    driver.set("train.lr_hash", 1e-9, 5);
    driver.set("train.lr_mlp", 1e-9, 5);
    driver.send(Command::Step(1));
    let events = driver.until("Paused", |e| matches!(e, Event::Paused { step: 6 }));
    let s = stats(&events)[0];
    assert!(s.loss.total > 0.0);
    assert!((s.lr_hash - 1e-9 * s.lr).abs() < 1e-15 && (s.lr_mlp - 1e-9 * s.lr).abs() < 1e-15, "{s:?}");
    let (_, slow) = driver.save(&checkpoint("slow"));
    let slow_change = max_change(&unweighted, &slow);
    assert!(slow_change < 1e-6, "a step at lr 1e-9 moved a parameter by {slow_change}");
    driver.set("train.lr_hash", f64::from(config.train.lr_hash), 6);
    driver.set("train.lr_mlp", f64::from(config.train.lr_mlp), 6);

    // refused settings: a warning naming the key, nothing changed (checked on the trainer at the end)
    for (key, value) in [("field.hidden_width", 64.0), ("loss.lambda_mse", -1.0), ("train.log_every", 0.5)] {
        driver.send(Command::Set { key: key.into(), value });
        let events = driver.until("a warning", |e| matches!(e, Event::Warning(_) | Event::SettingChanged { .. }));
        assert!(matches!(&events[..], [Event::Warning(w)] if w.contains(key)), "{key} = {value}: {events:?}");
    }

    // renders while training runs, of the size asked for
    driver.set("train.log_every", 2.0, 6);
    driver.send(Command::Resume);
    driver.send(Command::Render { id: 7, camera: camera(&dataset, 24, 20), cut: 1 });
    driver.send(Command::Render { id: 8, camera: camera(&dataset, 17, 9), cut: 0 });
    let events = driver.until("both renders", {
        let seen = std::cell::Cell::new(0);
        move |e| {
            seen.set(seen.get() + u32::from(matches!(e, Event::Rendered { .. })));
            seen.get() == 2
        }
    });
    assert!(matches!(events[0], Event::Resumed { step: 6 }), "{events:?}");
    for event in &events {
        if let Event::Rendered { id, cut, step, image } = event {
            let (w, h) = if *id == 7 { (24, 20) } else { (17, 9) };
            assert_eq!((image.rgb.width, image.rgb.height, *cut), (w, h, if *id == 7 { 1 } else { 0 }));
            let pixels = (w * h) as usize;
            assert_eq!((image.rgb.rgb.len(), image.depth.len(), image.opacity.len()), (3 * pixels, pixels, pixels));
            assert!(image.rgb.rgb.iter().all(|v| v.is_finite() && (-1e-3..=1.001).contains(v)));
            assert!(image.opacity.iter().any(|&o| o > 0.01), "render {id} is empty");
            assert!(*step > 6, "render {id} at step {step}: training went on between its chunks");
        }
    }

    // a few statistics lines later, pause; then nothing trains
    let events = driver.until("training", |e| matches!(e, Event::Stats(s) if s.step >= 20));
    let steps: Vec<u32> = stats(&events).iter().map(|s| s.step).collect();
    assert!(steps.windows(2).all(|w| w[1] == w[0] + 2), "log_every 2: {steps:?}");
    driver.send(Command::Pause);
    let events = driver.until("Paused", |e| matches!(e, Event::Paused { .. }));
    let Some(Event::Paused { step: paused }) = events.last() else { unreachable!() };
    let paused = *paused;
    assert!(paused >= 20);
    std::thread::sleep(Duration::from_millis(300));
    let (step, saved) = driver.save(&checkpoint("paused"));
    assert_eq!(step, paused, "trained while paused");

    driver.send(Command::Evaluate { views: Some(1) });
    let events = driver.until("Evaluated", |e| matches!(e, Event::Evaluated(_)));
    let Some(Event::Evaluated(report)) = events.last() else { unreachable!() };
    assert_eq!((report.steps, report.views, report.split.as_str()), (paused, 1, "test"));
    assert!(report.psnr.is_finite() && report.psnr > 5.0, "{report:?}");

    // Stop: the trainer comes back as it was when paused, with every accepted setting
    let trainer = driver.session.join().unwrap();
    assert_eq!(trainer.step, paused);
    assert_eq!(trainer.read_params().unwrap(), saved);
    let mut expected = config.clone();
    expected.train.log_every = 2;
    assert_eq!(trainer.config, expected);
    let state = CheckpointState::read(&checkpoint("paused")).unwrap();
    assert!(state.resumable());
    assert_eq!((state.step, state.config), (paused, expected));
}

/// Renders use buffers of their own: a run rendering between its steps trains as one that does not.
#[test]
fn renders_do_not_disturb_training() {
    const STEPS: u32 = 30;
    let tmp = TempDir::new("session-renders");
    let mut config = Config::tiny();
    config.train.log_every = 5;
    let dataset = scene(&tmp, &config);
    let run = |renders: bool| -> (Vec<StepStats>, Vec<f32>, Vec<u32>) {
        let driver = Driver {
            session: Session::spawn(
                trainer(&config, &dataset),
                dataset.clone(),
                SessionOptions { start_paused: true, ..Default::default() },
            ),
        };
        driver.send(Command::Step(STEPS));
        let mut rendered_at = Vec::new();
        if renders {
            for id in 0..6 {
                driver.send(Command::Render { id, camera: camera(&dataset, 32, 32), cut: (id % 2) as u32 });
            }
        }
        let events = driver.until("Paused", |e| matches!(e, Event::Paused { .. }));
        for event in &events {
            if let Event::Rendered { step, image, .. } = event {
                assert_eq!((image.rgb.width, image.rgb.height), (32, 32));
                rendered_at.push(*step);
            }
        }
        let stats = stats(&events).into_iter().cloned().collect();
        let trainer = driver.session.join().unwrap();
        assert_eq!(trainer.step, STEPS);
        (stats, trainer.read_params().unwrap(), rendered_at)
    };
    let (with, params_with, rendered_at) = run(true);
    let (without, params_without, _) = run(false);
    assert_eq!(rendered_at.len(), 6);
    // at least one finished between two steps (how many depends on when the commands arrive)
    assert!(rendered_at.iter().any(|&s| s > 0 && s < STEPS), "renders ran between steps: {rendered_at:?}");
    let steps = |s: &[StepStats]| s.iter().map(|s| s.step).collect::<Vec<_>>();
    assert_eq!(steps(&with), [5, 10, 15, 20, 25, 30]);
    assert_eq!(steps(&with), steps(&without));
    // the loss falls, and as without renders up to float-atomic noise (measured: 1e-7 on lavapipe)
    assert!(with.last().unwrap().loss.total < 0.8 * with[0].loss.total, "{:?}", with.iter().map(|s| s.loss.total));
    for (a, b) in with.iter().zip(&without) {
        let (a, b) = (a.loss.total, b.loss.total);
        assert!((a - b).abs() <= 1e-3 * b, "step loss {a} with renders, {b} without");
    }
    let change = max_change(&params_with, &params_without);
    assert!(change < 1e-3, "renders changed a parameter by {change}");
}

/// The step limit ends training; commands that would train after it, or train nothing, still answer.
#[test]
fn step_limit_and_empty_steps_answer() {
    let tmp = TempDir::new("session-limit");
    let config = Config::tiny();
    let dataset = scene(&tmp, &config);
    let options = SessionOptions { start_paused: true, max_steps: Some(4), ..Default::default() };
    let driver = Driver { session: Session::spawn(trainer(&config, &dataset), dataset.clone(), options) };

    // Step(0): nothing to train, paused at once
    driver.send(Command::Step(0));
    let events = driver.until("Paused", |e| matches!(e, Event::Paused { .. }));
    assert!(matches!(events[..], [Event::Paused { step: 0 }]), "{events:?}");

    // Step(10) stops at the limit of 4
    driver.send(Command::Step(10));
    let events = driver.until("Finished", |e| matches!(e, Event::Finished { .. }));
    assert!(matches!(&events[..], [Event::Stats(s), Event::Finished { step: 4 }] if s.step == 4), "{events:?}");

    // past the limit, Step and Resume say why nothing trains
    for command in [Command::Step(1), Command::Resume] {
        driver.send(command.clone());
        let events = driver.until("an answer", |e| !matches!(e, Event::Stats(_)));
        assert!(matches!(&events[..], [Event::Warning(w)] if w.contains("step limit")), "{command:?}: {events:?}");
    }
    let (step, _) = driver.save(&tmp.0.join("limit.safetensors"));
    assert_eq!(step, 4);
    assert_eq!(driver.session.join().unwrap().step, 4);
}
