//! Resuming a run from its checkpoint (`infnerf train --resume`): the run continues as if it had
//! never stopped, and what cannot be resumed is refused with a clear message.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use infnerf::field::FieldLayout;
use infnerf::io::{load_checkpoint, save_checkpoint};
use infnerf::run::{train, CheckpointState, EvalReport, TrainRequest};
use infnerf::scene_gen::{make_scene, SceneOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use temp_dir::TempDir;

const STEPS: u32 = 200;
const LOG_EVERY: u32 = 20;

/// tiny.toml with a metrics line every LOG_EVERY steps.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/tiny.toml")).unwrap();
    assert!(text.contains("log_every = 25"));
    std::fs::write(&path, text.replace("log_every = 25", &format!("log_every = {LOG_EVERY}"))).unwrap();
    path
}

fn metrics(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn number(line: &Value, key: &str) -> f64 {
    line[key].as_f64().unwrap_or_else(|| panic!("{key} in {line}"))
}

fn resume_request(scene: &Path, out: &Path, steps: u32) -> TrainRequest {
    TrainRequest {
        data: Some(scene.to_path_buf()),
        out: out.to_path_buf(),
        steps: Some(steps),
        resume: Some(out.join("checkpoint.safetensors")),
        ..Default::default()
    }
}

/// N steps in one run and N/2 + a resumed N/2 train alike: same step counter, one metrics log, the
/// same losses up to float-atomic noise.
///
/// The tolerances were checked against broken resumes (measured on lavapipe, 200 steps, resumed at
/// 100): with the Adam moments zeroed the lines after the resume differ from the uninterrupted run's
/// by 3-12 % and the final PSNR by 0.57 dB; with the RNG reset to the seed by 1.5-8 % and 0.13 dB;
/// with the occupancy grid zeroed by 2-80 % and 0.61 dB. A faithful resume: 1e-7 and 1e-6 dB.
#[test]
fn resumed_run_trains_as_the_uninterrupted_one() {
    let tmp = TempDir::new("resume");
    let scene = tmp.0.join("scene");
    make_scene(&scene, &SceneOptions { width: 40, height: 40, train_views: 16, test_views: 4, seed: 7 }).unwrap();
    let config = write_config(&tmp.0);
    let request = |out: &Path, steps: u32| TrainRequest {
        data: Some(scene.clone()),
        config: Some(config.clone()),
        out: out.to_path_buf(),
        steps: Some(steps),
        ..Default::default()
    };
    let whole_out = tmp.0.join("whole");
    let whole = train(&request(&whole_out, STEPS)).unwrap();
    let out = tmp.0.join("resumed");
    let half = train(&request(&out, STEPS / 2)).unwrap();
    let before = metrics(&out);
    assert_eq!(CheckpointState::read(&out.join("checkpoint.safetensors")).unwrap().step, STEPS / 2);

    let resumed = train(&resume_request(&scene, &out, STEPS)).unwrap();
    assert_eq!((resumed.steps, half.steps, whole.steps), (STEPS, STEPS / 2, STEPS));
    let state = CheckpointState::read(&out.join("checkpoint.safetensors")).unwrap();
    assert!(state.resumable() && state.step == STEPS);
    // the same settings as the uninterrupted run
    let settings = |dir: &Path| std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert_eq!(settings(&out), settings(&whole_out));

    // one metrics log: the first half's lines kept, then the resumed run's, steps and clock increasing
    let lines = metrics(&out);
    let whole_lines = metrics(&whole_out);
    assert_eq!(lines[..before.len()], before[..]);
    let steps = |lines: &[Value]| lines.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(steps(&lines), (1..=STEPS / LOG_EVERY).map(|i| u64::from(i * LOG_EVERY)).collect::<Vec<_>>());
    assert_eq!(steps(&lines), steps(&whole_lines));
    let elapsed: Vec<f64> = lines.iter().map(|l| number(l, "elapsed_s")).collect();
    assert!(elapsed.windows(2).all(|w| w[1] > w[0]), "the clock continues: {elapsed:?}");
    assert!(resumed.seconds > half.seconds);

    // the resumed steps drew the same batches with the same optimiser state: the same losses
    for (line, reference) in lines.iter().zip(&whole_lines) {
        let (a, b) = (number(line, "loss_total"), number(reference, "loss_total"));
        assert!((a - b).abs() <= 5e-3 * b, "step {}: loss {a} resumed, {b} uninterrupted", line["step"]);
    }
    assert!((resumed.psnr - whole.psnr).abs() < 0.05, "PSNR {} resumed, {} uninterrupted", resumed.psnr, whole.psnr);
    assert!((resumed.ssim - whole.ssim).abs() < 2e-3);
}

/// Writes `checkpoint` as an older format did: only the tensors `keep`, no RNG state or clock.
fn old_format(checkpoint: &Path, out: &Path, keep: &[&str]) {
    let (tensors, mut metadata) = load_checkpoint(checkpoint).unwrap();
    let metadata_map = metadata.as_object_mut().unwrap();
    metadata_map.insert("format".into(), "infnerf-checkpoint-1".into());
    metadata_map.remove("rng");
    metadata_map.remove("elapsed_s");
    let kept: Vec<(&str, Vec<usize>, &[f32])> = tensors
        .iter()
        .filter(|(n, _, _)| keep.contains(&n.as_str()))
        .map(|(n, s, v)| (n.as_str(), s.clone(), v.as_slice()))
        .collect();
    assert_eq!(kept.len(), keep.len());
    save_checkpoint(out, &kept, &metadata).unwrap();
}

fn infnerf(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_infnerf")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors = stderr.lines().filter(|l| l.starts_with("error:")).collect::<Vec<_>>().join("\n");
    (output.status.success(), errors, String::from_utf8_lossy(&output.stdout).to_string())
}

/// The run folder's files a refused resume must leave as they were.
fn run_files(out: &Path) -> Vec<Vec<u8>> {
    ["config.toml", "metrics.jsonl", "checkpoint.safetensors", "eval.json"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect()
}

#[test]
fn resume_from_the_command_line_and_what_it_refuses() {
    let tmp = TempDir::new("resume-cli");
    let scene = tmp.0.join("scene");
    make_scene(&scene, &SceneOptions { width: 24, height: 24, train_views: 6, test_views: 2, seed: 2 }).unwrap();
    let config = write_config(&tmp.0);
    let out = tmp.0.join("run");
    let run = TrainRequest {
        data: Some(scene.clone()),
        config: Some(config.clone()),
        out: out.clone(),
        steps: Some(LOG_EVERY),
        ..Default::default()
    };
    let first = train(&run).unwrap();
    let checkpoint = out.join("checkpoint.safetensors");
    let (scene_arg, checkpoint_arg) = (scene.to_str().unwrap(), checkpoint.to_str().unwrap());
    let untouched = run_files(&out);

    // the settings of a resumed run are its checkpoint's
    let (ok, error, _) =
        infnerf(&["train", "--resume", checkpoint_arg, "--config", config.to_str().unwrap(), "--data", scene_arg]);
    assert!(!ok && error.lines().count() == 1, "{error}");
    assert!(error.contains("--config") && error.contains("--resume"), "{error}");
    // a step limit the checkpoint has reached
    let error = train(&resume_request(&scene, &out, LOG_EVERY / 2)).unwrap_err().to_string();
    assert!(error.contains(&format!("step {LOG_EVERY}")) && error.contains("--steps"), "{error}");
    assert!(run_files(&out) == untouched, "a refused resume changed the run folder");

    // checkpoints without the optimiser state evaluate, but cannot resume
    for (name, keep) in [("format1", &["params", "occupancy", "occupancy_mean"][..]), ("params-only", &["params"])] {
        let old_out = tmp.0.join(name);
        std::fs::create_dir_all(&old_out).unwrap();
        let old = old_out.join("checkpoint.safetensors");
        old_format(&checkpoint, &old, keep);
        let error = train(&resume_request(&scene, &old_out, 2 * LOG_EVERY)).unwrap_err().to_string();
        assert!(error.contains(old.to_str().unwrap()) && error.contains("cannot continue"), "{name}: {error}");
        assert_eq!(std::fs::read_dir(&old_out).unwrap().count(), 1, "{name}: a refused resume wrote files");

        let (ok, error, stdout) = infnerf(&["eval", "--checkpoint", old.to_str().unwrap(), "--data", scene_arg]);
        assert!(ok, "{name}: {error}");
        let report: EvalReport = serde_json::from_str(&stdout).unwrap();
        assert_eq!((report.steps, report.views), (LOG_EVERY, 2), "{name}");
        // the same parameters; without the occupancy grid no sample is skipped, so nearly the same image
        let tolerance = if keep.len() == 3 { 1e-6 } else { 0.1 };
        assert!((report.psnr - first.psnr).abs() < tolerance, "{name}: PSNR {} vs {}", report.psnr, first.psnr);
    }

    // a checkpoint from before the node blocks were padded to whole vec4s reads as the padded one
    let state = CheckpointState::read(&checkpoint).unwrap();
    let layout = FieldLayout::new(&state.config.field);
    let (packed, padded) = (layout.packed_params() as usize, layout.node_params as usize);
    assert!(packed < padded, "the test's layout must have padding");
    let (tensors, metadata) = load_checkpoint(&checkpoint).unwrap();
    let unpadded: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| match name.as_str() {
            "params" | "adam_m1" | "adam_m2" => {
                let values: Vec<f32> = values.chunks(padded).flat_map(|block| block[..packed].to_vec()).collect();
                (name, vec![values.len() / packed, packed], values)
            }
            _ => (name, shape, values),
        })
        .collect();
    let old = tmp.0.join("unpadded.safetensors");
    let views: Vec<(&str, Vec<usize>, &[f32])> =
        unpadded.iter().map(|(n, s, v)| (n.as_str(), s.clone(), v.as_slice())).collect();
    save_checkpoint(&old, &views, &metadata).unwrap();
    let read = CheckpointState::read(&old).unwrap();
    assert!(read.params == state.params && read.moments == state.moments, "padded differently");
    assert!(state.moments.is_some());

    // `--resume` alone continues in the checkpoint's folder (here on images at half size: the
    // settings it writes and its checkpoint's say so alike)
    let args = ["train", "--resume", checkpoint_arg, "--data", scene_arg, "--steps", "40", "--downscale", "2"];
    let (ok, error, stdout) = infnerf(&args);
    assert!(ok, "{error}");
    let report: EvalReport = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report.steps, 2 * LOG_EVERY);
    let steps: Vec<u64> = metrics(&out).iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [u64::from(LOG_EVERY), 2 * u64::from(LOG_EVERY)]);
    let state = CheckpointState::read(&checkpoint).unwrap();
    assert_eq!((state.step, state.config.data.downscale), (2 * LOG_EVERY, 2));
    assert!(std::fs::read_to_string(out.join("config.toml")).unwrap().contains("downscale = 2"));
}

/// The adversarial term's discriminator (parameters, Adam moments, update count) goes into the
/// checkpoint and comes back on resume; a run without one writes none.
/// A trainer of `config` after `steps` steps on a generated scene in `tmp`, with its data and device.
fn trained(
    tmp: &TempDir,
    options: &SceneOptions,
    config: &infnerf::config::Config,
    steps: u32,
) -> (infnerf::data::Dataset, std::sync::Arc<infnerf::gpu::Gpu>, infnerf::trainer::Trainer) {
    let scene = tmp.0.join("scene");
    make_scene(&scene, options).unwrap();
    let dataset = infnerf::run::load_data(&scene, config).unwrap();
    let gpu = std::sync::Arc::new(infnerf::gpu::Gpu::new(&Default::default()).unwrap());
    let mut trainer = infnerf::trainer::Trainer::new(gpu.clone(), config.clone(), &dataset).unwrap();
    for _ in 0..steps {
        trainer.step().unwrap();
    }
    trainer.wait_all().unwrap();
    (dataset, gpu, trainer)
}

#[test]
fn the_discriminator_is_checkpointed() {
    let tmp = TempDir::new("resume-discriminator");
    let mut config = infnerf::config::Config::tiny();
    config.train.structure_patches = 1;
    config.train.structure_patch_size = 16;
    config.loss.lambda_adversarial = 0.1;
    let options = SceneOptions { width: 40, height: 40, train_views: 8, test_views: 2, seed: 5 };
    let (dataset, gpu, trainer) = trained(&tmp, &options, &config, 6);
    let disc = trainer.discriminator.as_ref().unwrap();
    let read = |t: &infnerf::trainer::Trainer,
                pick: fn(&infnerf::trainer::adversarial::DiscriminatorParams) -> &wgpu::Buffer| {
        let d = t.discriminator.as_ref().unwrap();
        t.gpu.read::<f32>(pick(d), d.count as usize).unwrap()
    };
    let trained = [read(&trainer, |d| &d.params), read(&trainer, |d| &d.m1), read(&trainer, |d| &d.m2)];
    assert_eq!(disc.updates.get(), 6, "one update per step");
    assert!(trained[1].iter().any(|&m| m != 0.0), "the discriminator trained");
    let path = tmp.0.join("checkpoint.safetensors");
    infnerf::run::save_trainer_checkpoint(&trainer, &path, 1.0).unwrap();

    let state = CheckpointState::read(&path).unwrap();
    assert_eq!(state.discriminator.as_ref().map(|d| d.1), Some(6));
    let resumed = state.into_trainer(gpu.clone(), &dataset).unwrap();
    let back = [read(&resumed, |d| &d.params), read(&resumed, |d| &d.m1), read(&resumed, |d| &d.m2)];
    assert_eq!(back, trained);
    assert_eq!(resumed.discriminator.as_ref().unwrap().updates.get(), 6);

    config.train.structure_patches = 0;
    config.loss.lambda_adversarial = 0.0;
    let plain = infnerf::trainer::Trainer::new(gpu, config, &dataset).unwrap();
    infnerf::run::save_trainer_checkpoint(&plain, &path, 1.0).unwrap();
    assert!(CheckpointState::read(&path).unwrap().discriminator.is_none());
    let (tensors, _) = load_checkpoint(&path).unwrap();
    assert!(tensors.iter().all(|(name, _, _)| !name.starts_with("discriminator")));
}

/// Mixed precision: the loss scale and its count of clean steps are checkpointed, and a resumed
/// trainer continues from them (an f32 run's checkpoint has none).
#[test]
fn the_loss_scale_is_checkpointed() {
    let tmp = TempDir::new("resume-loss-scale");
    let mut config = infnerf::config::Config::tiny();
    config.train.precision = infnerf::config::Precision::Mixed;
    config.train.loss_scale_growth_steps = 2;
    let options = SceneOptions { width: 24, height: 24, train_views: 4, test_views: 1, seed: 3 };
    let (dataset, gpu, trainer) = trained(&tmp, &options, &config, 5);
    let state = trainer.loss_scale_state().unwrap().expect("mixed precision on lavapipe");
    // doubled after steps 2 and 4, one clean step since
    assert_eq!((state.scale, state.clean_steps), (4.0 * config.train.loss_scale_init, 1));
    let path = tmp.0.join("checkpoint.safetensors");
    infnerf::run::save_trainer_checkpoint(&trainer, &path, 1.0).unwrap();
    let read = CheckpointState::read(&path).unwrap();
    assert_eq!(read.loss_scale, Some(state));
    let resumed = read.into_trainer(gpu.clone(), &dataset).unwrap();
    assert_eq!(resumed.loss_scale_state().unwrap(), Some(state));
    // a scale that no run could have reached is refused, naming the field
    let (tensors, mut metadata) = load_checkpoint(&path).unwrap();
    metadata["loss_scale"]["scale"] = 0.25.into();
    let tensors: Vec<(&str, Vec<usize>, &[f32])> =
        tensors.iter().map(|(n, s, v)| (n.as_str(), s.clone(), v.as_slice())).collect();
    let bad = tmp.0.join("bad.safetensors");
    save_checkpoint(&bad, &tensors, &metadata).unwrap();
    let error = CheckpointState::read(&bad).err().expect("refused").to_string();
    assert!(error.contains("bad.safetensors") && error.contains("loss_scale"), "{error}");

    config.train.precision = infnerf::config::Precision::F32;
    let plain = infnerf::trainer::Trainer::new(gpu, config, &dataset).unwrap();
    infnerf::run::save_trainer_checkpoint(&plain, &path, 1.0).unwrap();
    assert_eq!(CheckpointState::read(&path).unwrap().loss_scale, None);
}
