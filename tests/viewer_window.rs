//! The viewer's window under a virtual X server (Xvfb) on whatever device wgpu finds (lavapipe on
//! the CI machine): `infnerf view --screenshot-after A,B --exit` must open, train, render and shoot.
//!
//! Needs `Xvfb` (the `xvfb` package). Without it the test says so and passes, unless
//! INFNERF_REQUIRE_XVFB is set, as `.ci/run` sets it.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use infnerf::config::Config;
use infnerf::scene_gen::{make_scene, SceneOptions};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use temp_dir::TempDir;

/// Kills the X server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Xvfb on a free display: displays whose lock file exists (a server running, or one left
/// behind by a killed one) are skipped, and a server that exits at once is retried on the next.
/// None when Xvfb is not installed.
fn xvfb() -> Option<(Server, String)> {
    let first = 70 + std::process::id() % 200;
    for n in (first..first + 100).filter(|n| !Path::new(&format!("/tmp/.X{n}-lock")).exists()) {
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut server = Server(child);
        // the server is up when its socket exists
        let socket = format!("/tmp/.X11-unix/X{n}");
        let started = Instant::now();
        loop {
            if server.0.try_wait().ok().flatten().is_some() {
                break;
            }
            if Path::new(&socket).exists() {
                return Some((server, display));
            }
            assert!(started.elapsed() < Duration::from_secs(20), "Xvfb {display} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("Xvfb did not start on any of displays :{first} to :{}", first + 99);
}

fn pixels(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// Standard deviation of the grey levels: a blank (one-colour) image has 0.
fn spread(image: &image::RgbImage) -> f64 {
    let grey: Vec<f64> = image.pixels().map(|p| f64::from(p[0]) + f64::from(p[1]) + f64::from(p[2])).collect();
    let mean = grey.iter().sum::<f64>() / grey.len() as f64;
    (grey.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / grey.len() as f64).sqrt() / 3.0
}

#[test]
fn the_window_trains_renders_and_takes_screenshots_under_xvfb() {
    let Some((_server, display)) = xvfb() else {
        assert!(std::env::var_os("INFNERF_REQUIRE_XVFB").is_none(), "Xvfb is required here but cannot start");
        eprintln!("skipped: Xvfb is not installed (apt-get install xvfb)");
        return;
    };
    let tmp = TempDir::new("viewer-window");
    let data = tmp.0.join("scene");
    make_scene(&data, &SceneOptions { width: 48, height: 48, train_views: 12, test_views: 2, seed: 3 }).unwrap();
    let mut config = Config::tiny();
    config.train.log_every = 5;
    let config_path = tmp.0.join("config.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let out = tmp.0.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_infnerf"))
        .args(["view", "--screenshot-after", "10,45", "--exit", "--fps", "4"])
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config_path)
        .arg("--out")
        .arg(&out)
        .env("DISPLAY", &display)
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(400) {
            let _ = child.kill();
            panic!("the viewer did not exit after its screenshots");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "the viewer failed: {log}");

    let first = pixels(&out.join("screenshot-1.png"));
    let second = pixels(&out.join("screenshot-2.png"));
    assert_eq!(first.dimensions(), second.dimensions());
    assert!(spread(&first) > 10.0 && spread(&second) > 10.0, "a screenshot is blank");
    // the middle of the window is the render: it changed as training went on
    let (w, h) = first.dimensions();
    let (mut changed, mut total) = (0u64, 0u64);
    for y in h / 4..3 * h / 4 {
        for x in 2 * w / 5..3 * w / 5 {
            let (a, b) = (first.get_pixel(x, y), second.get_pixel(x, y));
            total += 1;
            if (0..3).any(|c| a[c].abs_diff(b[c]) > 8) {
                changed += 1;
            }
        }
    }
    assert!(changed * 20 > total, "the render did not change between the screenshots ({changed} of {total} pixels)");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("viewer.json")).unwrap()).unwrap();
    let (opened, exited) = (report["step_at_open"].as_u64().unwrap(), report["step_at_exit"].as_u64().unwrap());
    assert!(exited > opened, "no training step while the window was open: {report}");
    // at 4 redraws a second while training, against the default 1 on a CPU device
    assert!(report["frames"].as_u64().unwrap() > 50, "{report}");
    assert!(report["build_ms_mean"].as_f64().unwrap() > 0.0, "{report}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 2, "{metrics}");
    assert!(out.join("checkpoint.safetensors").exists(), "closing the window writes the checkpoint");
}
