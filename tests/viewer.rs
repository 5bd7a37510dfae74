//! The viewer's message path without a window: what its sliders and buttons send reaches the
//! running training and metrics.jsonl, and a snapshot continues its step counter and loss curve.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use infnerf::config::Config;
use infnerf::gpu::{Gpu, GpuOptions};
use infnerf::io::MetricsLog;
use infnerf::run::{load_data, Prepared, Started, TrainRequest};
use infnerf::scene_gen::{make_scene, SceneOptions};
use infnerf::session::SessionOptions;
use infnerf::trainer::Trainer;
use infnerf::viewer::controller::Controller;
use infnerf::viewer::history::History;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use temp_dir::TempDir;

const TIMEOUT: Duration = Duration::from_secs(120);

fn scene(tmp: &TempDir) -> PathBuf {
    let dir = tmp.0.join("scene");
    make_scene(&dir, &SceneOptions { width: 32, height: 32, train_views: 12, test_views: 2, seed: 5 }).unwrap();
    dir
}

fn gpu() -> Arc<Gpu> {
    Arc::new(Gpu::new(&GpuOptions::default()).expect("a wgpu adapter (install mesa-vulkan-drivers)"))
}

/// Polls until `done` holds (the window does this every frame).
fn wait_for(control: &mut Controller, what: &str, done: impl Fn(&Controller) -> bool) {
    let started = Instant::now();
    loop {
        control.poll().unwrap();
        if done(control) {
            return;
        }
        assert!(started.elapsed() < TIMEOUT, "waiting for {what}; messages: {:?}", control.messages);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_weight_changed_in_the_viewer_applies_at_the_next_step_and_is_logged() {
    let tmp = TempDir::new("viewer-set");
    let mut config = Config::tiny();
    config.train.log_every = 1;
    let dir = scene(&tmp);
    let dataset = Arc::new(load_data(&dir, &config).unwrap());
    let trainer = Trainer::new(gpu(), config, &dataset).unwrap();
    let metrics_path = tmp.0.join("metrics.jsonl");
    let metrics = MetricsLog::create(&metrics_path).unwrap();
    let options = SessionOptions { start_paused: true, ..Default::default() };
    let mut control = Controller::new(trainer, dataset, metrics, &tmp.0, History::default(), options);

    control.single_step(2);
    wait_for(&mut control, "two steps", |c| c.status.step == 2 && !c.status.training);
    let before = control.history.latest("weight/mse").expect("the weight of mse is logged");
    assert!(before > 0.0);

    // what the slider does: a local check, then the command; a bad value is refused at once
    assert!(control.set("loss.lambda_mse", -1.0).is_err());
    control.set("loss.lambda_mse", 0.25).unwrap();
    control.single_step(1);
    wait_for(&mut control, "the third step", |c| c.status.step == 3 && !c.status.training);

    let log = lines(&metrics_path);
    let steps: Vec<Option<u64>> = log.iter().map(|l| l["step"].as_u64()).collect();
    assert_eq!(steps, vec![Some(1), Some(2), Some(2), Some(3)], "{log:?}");
    assert_eq!(log[2]["event"], "set");
    assert_eq!(log[2]["key"], "loss.lambda_mse");
    assert_eq!(log[2]["value"].as_f64(), Some(0.25));
    let after = log[3]["loss_weights"]["mse"].as_f64().unwrap();
    assert!((after / before - 0.25).abs() < 1e-6, "weight {before} -> {after}");
    assert_eq!(control.history.events, vec![(2, "loss.lambda_mse = 0.25".to_string())]);

    // reset to the config sends the starting value back
    control.reset_settings().unwrap();
    assert_eq!(control.config.loss.lambda_mse, 1.0);
    control.single_step(1);
    wait_for(&mut control, "the fourth step", |c| c.status.step == 4 && !c.status.training);
    let log = lines(&metrics_path);
    let last = log.last().unwrap()["loss_weights"]["mse"].as_f64().unwrap();
    assert!((last - before).abs() < 1e-9 * before.max(1.0), "{last} vs {before}");
    control.shutdown().unwrap();
}

#[test]
fn a_snapshot_continues_the_step_counter_and_the_loss_curve() {
    let tmp = TempDir::new("viewer-snapshot");
    let out = tmp.0.join("run");
    let mut config = Config::tiny();
    config.train.log_every = 1;
    let config_path = tmp.0.join("config.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let dir = scene(&tmp);
    let request =
        TrainRequest { data: Some(dir.clone()), config: Some(config_path), out: out.clone(), ..Default::default() };
    let prepared = Prepared::load(&request).unwrap();
    let dataset = prepared.dataset.clone();
    let Started { trainer, metrics, .. } = prepared.start(gpu(), &out).unwrap();
    let options = SessionOptions { start_paused: true, max_steps: Some(config.train.steps), ..Default::default() };
    let mut control = Controller::new(trainer, dataset, metrics, &out, History::default(), options);
    control.single_step(3);
    wait_for(&mut control, "three steps", |c| c.status.step == 3 && !c.status.training);
    let snapshot = control.snapshot_path();
    control.save_snapshot(&snapshot);
    wait_for(&mut control, "the snapshot", |c| c.messages.iter().any(|m| m.contains("saved")));
    control.shutdown().unwrap();

    // `infnerf view --checkpoint`: the same run, its curve read back from metrics.jsonl
    let request = TrainRequest { data: Some(dir), resume: Some(snapshot), out: out.clone(), ..Default::default() };
    let prepared = Prepared::load(&request).unwrap();
    let dataset = prepared.dataset.clone();
    let history = History::load(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(history.last_step, 3);
    let Started { trainer, metrics, elapsed_before } = prepared.start(gpu(), &out).unwrap();
    assert_eq!(trainer.step, 3);
    assert!(elapsed_before > 0.0);
    let options = SessionOptions { start_paused: true, elapsed_before, ..Default::default() };
    let mut control = Controller::new(trainer, dataset, metrics, &out, history, options);
    assert_eq!(control.status.step, 3);
    control.single_step(2);
    wait_for(&mut control, "two more steps", |c| c.status.step == 5 && !c.status.training);
    let curve: Vec<f64> = control.history.get("loss_total").unwrap().iter().map(|p| p[0]).collect();
    assert_eq!(curve, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let elapsed = control.history.get("loss_total").unwrap();
    assert!(elapsed.iter().all(|p| p[1].is_finite()));
    let steps: Vec<u64> = lines(&out.join("metrics.jsonl")).iter().filter_map(|l| l["step"].as_u64()).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5], "one metrics file, continued");
    control.shutdown().unwrap();
}
