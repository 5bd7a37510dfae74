//! End to end: training on generated scenes, through the library and the command line, and the
//! command line's answers to bad input.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use infnerf::run::{train, EvalReport, TrainRequest};
use infnerf::scene_gen::{make_scene, SceneOptions};
use std::path::Path;
use std::process::Command;
use temp_dir::TempDir;

/// tiny.toml with one coarser tree cut rendered per step besides the finest.
fn tiny_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tiny.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/tiny.toml")).unwrap();
    assert!(!text.contains("[loss]"));
    std::fs::write(&path, text + "\n[loss]\ncoarse_cuts = 1\n").unwrap();
    path
}

#[test]
fn training_raises_test_psnr_and_writes_every_output() {
    let tmp = TempDir::new("train");
    let scene = tmp.0.join("scene");
    make_scene(&scene, &SceneOptions { width: 40, height: 40, train_views: 24, test_views: 4, seed: 3 }).unwrap();
    let config = tiny_config(&tmp.0);
    let request = |out: &str, steps: u32| TrainRequest {
        data: Some(scene.clone()),
        config: Some(config.clone()),
        out: tmp.0.join(out),
        steps: Some(steps),
        ..Default::default()
    };
    let untrained = train(&request("untrained", 1)).unwrap();
    let trained = train(&request("trained", 300)).unwrap();
    // the stated margin: 300 tiny steps lift test PSNR by at least 6 dB
    assert!(trained.psnr >= untrained.psnr + 6.0, "PSNR {:.2} -> {:.2} dB", untrained.psnr, trained.psnr);
    assert!(trained.ssim > untrained.ssim);
    assert_eq!((trained.split.as_str(), trained.views, trained.steps), ("test", 4, 300));

    let out = tmp.0.join("trained");
    let eval: EvalReport = serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
    assert!((eval.psnr - trained.psnr).abs() < 1e-9 && (eval.ssim - trained.ssim).abs() < 1e-9);
    assert_eq!((eval.views, eval.steps, eval.split.as_str()), (trained.views, trained.steps, "test"));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2);
    assert!(out.join("renders/test_000.png").exists(), "evaluation writes comparison images");
    for key in [
        "step",
        "elapsed_s",
        "loss_total",
        "loss_mse",
        "loss",
        "psnr_train",
        "rays",
        "samples",
        "samples_active",
        "rays_per_s",
        "lr",
        "lr_hash",
        "lr_mlp",
        "gpu_bytes",
        "sanitized",
        "sanitized_by_pass",
        "dispatches_per_step",
        "loss_weights",
        "schedule_weights",
        "balancer_weights",
        "level_weights",
        "grad_norm",
        "grad_norm_mean",
        "grad",
        "anomalies",
        "skipped_steps",
        "clipped_steps",
        "lr_plateau_reductions",
        "lr_restore_factor",
        "unavailable",
    ] {
        assert!(lines.iter().all(|l| l.get(key).is_some()), "metrics.jsonl lacks {key}");
    }
    let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=12).map(|i| 25 * i).collect::<Vec<u64>>(), "a line every log_every = 25 steps");
    for line in &lines {
        // the loss of every term at each rendered cut (the finest and one coarser), the first the finest
        let loss = line["loss"].as_object().unwrap();
        assert_eq!(
            loss.keys().collect::<Vec<_>>(),
            [
                "adversarial",
                "density_consistency",
                "depth_consistency",
                "discriminator",
                "lpips",
                "mse",
                "normal_consistency",
                "param",
                "seam",
                "sparsity",
                "ssim",
                "tv",
                "tv_depth"
            ],
            "{line}"
        );
        // the regularisers are off (lambda 0): not computed, reported as 0
        for term in ["depth_consistency", "param", "sparsity", "ssim", "tv", "tv_depth"] {
            assert!(loss[term].as_array().unwrap().iter().all(|v| v.as_f64() == Some(0.0)), "{line}");
        }
        let mse: Vec<f64> = loss["mse"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(mse.len(), 2, "{line}");
        assert!(mse.iter().all(|v| v.is_finite() && *v > 0.0), "{line}");
        assert_eq!(mse[0], line["loss_mse"].as_f64().unwrap());
        assert_eq!(line["sanitized"].as_u64(), Some(0), "{line}");
        let by_pass = line["sanitized_by_pass"].as_object().unwrap();
        assert!(by_pass.len() == 4 && by_pass.values().all(|n| n.as_u64() == Some(0)), "{line}");
        // the total weighs the cuts by 2^(-level_gamma * level), normalised: levels 1 and 0 get 1/3, 2/3
        let total = line["loss_total"].as_f64().unwrap();
        assert!((total - (mse[0] / 3.0 + mse[1] * 2.0 / 3.0)).abs() < 1e-6 * total, "{line}");
        // rays, samples, node_scan, scatter, field_forward, render_forward, loss_mse, render_backward,
        // field_backward, loss_stats, grad_norm, grad_guard, adam (one page each); occupancy + its
        // mean on update steps (the line's last step, s - 1, updates in the 16-step warm-up and every 8)
        let last = line["step"].as_u64().unwrap() - 1;
        let expected = 13 + if last < 16 || last % 8 == 0 { 2 } else { 0 };
        assert_eq!(line["dispatches_per_step"].as_u64(), Some(expected), "{line}");
    }
    let first = lines[0]["loss_total"].as_f64().unwrap();
    let last = lines.last().unwrap()["loss_total"].as_f64().unwrap();
    assert!(last < first * 0.5, "training loss {first} -> {last}");

    // the checkpoint evaluates to the same numbers through `infnerf eval`
    let output = Command::new(env!("CARGO_BIN_EXE_infnerf"))
        .args(["eval", "--checkpoint"])
        .arg(out.join("checkpoint.safetensors"))
        .arg("--data")
        .arg(&scene)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let again: EvalReport = serde_json::from_slice(&output.stdout).unwrap();
    assert!((again.psnr - trained.psnr).abs() < 1e-3 && again.views == 4 && again.steps == 300);
}

fn infnerf(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_infnerf")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (output.status.success(), stderr.lines().filter(|l| l.starts_with("error:")).collect::<Vec<_>>().join("\n"))
}

#[test]
fn bad_input_is_a_one_line_error_naming_file_and_field() {
    let tmp = TempDir::new("bad");
    let scene = tmp.0.join("scene");
    make_scene(&scene, &SceneOptions { width: 16, height: 16, train_views: 3, test_views: 2, seed: 1 }).unwrap();
    let scene_arg = scene.to_str().unwrap();
    let out = tmp.0.join("out");
    let out_arg = out.to_str().unwrap();

    let bad_config = |name: &str, text: &str| {
        let path = tmp.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    for (name, text, field) in [
        ("zero.toml", "[field]\nhidden_width = 0\n", "field.hidden_width"),
        ("negative.toml", "[train]\npatch_size = -8\n", "patch_size"),
        ("unknown.toml", "[train]\nlearning_rate = 1.0\n", "learning_rate"),
        ("nan.toml", "[train]\nlr_hash = nan\n", "train.lr_hash"),
        ("lambda.toml", "[loss]\nlambda_mse = -1.0\n", "loss.lambda_mse"),
        ("cuts.toml", "[loss]\ncoarse_cuts = 9\n", "loss.coarse_cuts"),
        ("buffer.toml", "[train]\nmax_buffer_mb = \"big\"\n", "train.max_buffer_mb"),
    ] {
        let config = bad_config(name, text);
        let (ok, error) =
            infnerf(&["train", "--data", scene_arg, "--config", &config, "--out", out_arg, "--steps", "1"]);
        assert!(!ok);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(error.contains(name) && error.contains(field), "{error}");
    }

    // an absurd redraw rate for the viewer, refused before any window opens
    for fps in ["0", "nan", "1000"] {
        let (ok, error) = infnerf(&["view", "--data", scene_arg, "--out", out_arg, "--fps", fps]);
        assert!(!ok && error.lines().count() == 1 && error.contains("--fps"), "{error}");
    }

    // an output folder where a file should be
    let blocked = tmp.0.join("blocked");
    std::fs::create_dir_all(blocked.join("metrics.jsonl")).unwrap();
    let (ok, error) = infnerf(&["train", "--data", scene_arg, "--out", blocked.to_str().unwrap(), "--steps", "1"]);
    assert!(!ok && error.lines().count() == 1 && error.contains("metrics.jsonl"), "{error}");

    // malformed JSON
    let broken = tmp.0.join("broken");
    make_scene(&broken, &SceneOptions { width: 16, height: 16, train_views: 3, test_views: 2, seed: 1 }).unwrap();
    std::fs::write(broken.join("transforms_train.json"), "{\"frames\": [").unwrap();
    let (ok, error) = infnerf(&["train", "--data", broken.to_str().unwrap(), "--out", out_arg, "--steps", "1"]);
    assert!(!ok && error.contains("transforms_train.json"), "{error}");

    // a missing image
    std::fs::remove_file(scene.join("train/r_1.png")).unwrap();
    let (ok, error) = infnerf(&["train", "--data", scene_arg, "--out", out_arg, "--steps", "1"]);
    assert!(!ok && error.contains("r_1") && error.contains("frames[1].file_path"), "{error}");

    // an image of the wrong size
    image::RgbaImage::new(8, 8).save(scene.join("train/r_1.png")).unwrap();
    let (ok, error) = infnerf(&["train", "--data", scene_arg, "--out", out_arg, "--steps", "1"]);
    assert!(!ok && error.contains("r_1.png") && error.contains("8x8"), "{error}");

    // absurd command-line values and a missing checkpoint
    let (ok, error) = infnerf(&["train", "--data", scene_arg, "--max-seconds", "-3"]);
    assert!(!ok && error.contains("--max-seconds"), "{error}");
    let (ok, error) = infnerf(&["eval", "--checkpoint", "/nonexistent/checkpoint.safetensors", "--data", scene_arg]);
    assert!(!ok && error.contains("/nonexistent/checkpoint.safetensors"), "{error}");
}
