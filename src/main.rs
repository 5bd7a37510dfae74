//! The `infnerf` command line.

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use infnerf::gpu::GpuOptions;
use infnerf::run::{self, TrainRequest};
use infnerf::viewer::{self, ViewRequest};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "infnerf",
    version,
    about = "Train octree level-of-detail neural radiance fields (Inf-NeRF) on any GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Adapter to use: a case-insensitive part of its name (see the log); WGPU_BACKEND picks the backend.
    #[arg(long, global = true)]
    adapter: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Train headless with a progress bar; writes metrics.jsonl, eval.json and a checkpoint.
    Train(TrainArgs),
    /// Open the viewer: train while watching the render, the plots and the octree, and steer the
    /// loss weights and learning rates live.
    View(ViewArgs),
    /// Evaluate a checkpoint (PSNR, SSIM) on a split; prints the same JSON as eval.json.
    Eval(EvalArgs),
    /// Measure training throughput and memory bandwidth; prints JSON.
    Bench(BenchArgs),
    /// Render an analytic scene on the CPU (Blender or instant-ngp format), with ground-truth depth and normals.
    MakeScene(MakeSceneArgs),
}

#[derive(Args)]
struct TrainArgs {
    /// Dataset folder (Blender transforms_{train,val,test}.json or instant-ngp transforms.json); default: the bundled scene.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Settings file (TOML); default: the built-in defaults (assets/configs/default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder (default: runs/latest, or the resumed checkpoint's folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Training steps (default: train.steps of the config, or unlimited with --max-seconds).
    #[arg(long)]
    steps: Option<u32>,
    /// Stop training after this many seconds.
    #[arg(long, allow_negative_numbers = true)]
    max_seconds: Option<f64>,
    /// Evaluate on this many evenly spaced test views (default: all).
    #[arg(long)]
    eval_views: Option<usize>,
    /// Continue the run saved in this checkpoint (OUT/checkpoint.safetensors): same settings, step
    /// counter, optimiser state and clock; --steps is the step to stop at.
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<PathBuf>,
    /// Shrink every image by this integer factor while loading (overrides data.downscale; 0: automatic).
    #[arg(long, value_name = "N")]
    downscale: Option<u32>,
    /// Inject a fault to see the recovery: nan-grad@STEP (the loss's gradient becomes NaN) or
    /// loss-spike@STEP (the MSE and its gradient x1000); add xCOUNT for that many steps in a row.
    #[arg(long, value_name = "KIND@STEP")]
    inject_fault: Option<infnerf::stability::Fault>,
}

#[derive(Args)]
struct ViewArgs {
    /// Dataset folder (as for train); default: the bundled scene.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Settings file (TOML); default: the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (its settings, step counter, optimiser state, clock
    /// and loss curve).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Output folder: metrics.jsonl, the checkpoint written when the window closes, screenshots
    /// (default: the checkpoint's folder, else runs/view).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop training at this step (default: train.steps of the config).
    #[arg(long)]
    steps: Option<u32>,
    /// Stop training after this many seconds (the window stays open).
    #[arg(long, allow_negative_numbers = true)]
    max_seconds: Option<f64>,
    #[arg(long, value_name = "N")]
    downscale: Option<u32>,
    /// Save OUT/screenshot-<i>.png this many seconds after the window opens (repeat, or separate by commas).
    #[arg(long, value_name = "S", value_delimiter = ',')]
    screenshot_after: Vec<f64>,
    /// Close the window after the last --screenshot-after (and write OUT/viewer.json: frames per second, steps).
    #[arg(long)]
    exit: bool,
    /// Open with training paused.
    #[arg(long)]
    paused: bool,
    /// Redraws per second while nothing but training changes (default: 1 on a CPU device, 30 on a
    /// GPU; input always redraws at once). Also a View-panel setting.
    #[arg(long, value_name = "N")]
    fps: Option<f32>,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
    /// Evaluate on this many evenly spaced views (default: all).
    #[arg(long)]
    views: Option<usize>,
    /// Shrink every image by this integer factor while loading (default: the checkpoint's data.downscale).
    #[arg(long, value_name = "N")]
    downscale: Option<u32>,
    /// Also each tree cut at its pyramid scale: PSNR, depth disagreement with the next finer cut, and
    /// the finest cut's depth error where the data has ground-truth depth.
    #[arg(long)]
    levels: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Dataset folder; default: the bundled scene.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    seconds: f64,
    /// Shrink every image by this integer factor while loading (overrides data.downscale; 0: automatic).
    #[arg(long, value_name = "N")]
    downscale: Option<u32>,
}

#[derive(Args)]
struct MakeSceneArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 100)]
    width: u32,
    #[arg(long, default_value_t = 100)]
    height: u32,
    #[arg(long, default_value_t = 60)]
    train_views: u32,
    #[arg(long, default_value_t = 20)]
    test_views: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// blender: transforms_{train,val,test}.json; ngp: one transforms.json (instant-ngp / nerfstudio).
    #[arg(long, value_enum, default_value_t = SceneFormatArg::Blender)]
    format: SceneFormatArg,
    /// The multi-scale scene: fine patterns and thin wires, cameras 0.15 to 3 units from the surface
    /// (distance per frame in `camera_distance`), so the octree grows 3+ levels deep; train it with
    /// assets/configs/multiscale.toml. Blender format only.
    #[arg(long)]
    multiscale: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum SceneFormatArg {
    Blender,
    Ngp,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).format_timestamp(None).init();
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> Result<()> {
    let gpu = GpuOptions { adapter: cli.adapter, ..Default::default() };
    match cli.command {
        None => {
            let request = TrainRequest { out: "runs/default".into(), gpu, progress: true, ..Default::default() };
            if viewer::has_display() {
                let view = ViewRequest { train: request.clone(), ..Default::default() };
                match viewer::run(view) {
                    Ok(()) => return Ok(()),
                    // no window after all (e.g. a display named but not reachable): train headless
                    Err(error) => log::warn!("{error:#}; training headless instead"),
                }
            } else {
                log::info!("no display: training headless; on a machine with a display, `infnerf` (or `infnerf view`) opens the viewer");
            }
            // a two-minute headless demo on the bundled scene
            let report = run::train(&TrainRequest { max_seconds: Some(120.0), ..request })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some(Command::View(a)) => {
            if let Some(fps) = a.fps {
                anyhow::ensure!(
                    viewer::REDRAW_RANGE.contains(&fps),
                    "--fps must be a number in [{}, {}], not {fps}",
                    viewer::REDRAW_RANGE.start(),
                    viewer::REDRAW_RANGE.end()
                );
            }
            if !viewer::has_display() {
                anyhow::bail!(
                    "no display (DISPLAY and WAYLAND_DISPLAY are unset): the viewer needs one; `infnerf train` trains headless"
                );
            }
            let out = run::out_dir(a.out, a.checkpoint.as_deref(), "runs/view");
            let train = TrainRequest {
                data: a.data,
                config: a.config,
                out,
                resume: a.checkpoint,
                steps: a.steps,
                max_seconds: a.max_seconds,
                downscale: a.downscale,
                gpu,
                ..Default::default()
            };
            viewer::run(ViewRequest {
                train,
                screenshots: a.screenshot_after,
                exit: a.exit,
                start_paused: a.paused,
                fps: a.fps,
            })?;
        }
        Some(Command::Train(a)) => {
            let out = run::out_dir(a.out, a.resume.as_deref(), "runs/latest");
            let request = TrainRequest {
                data: a.data,
                config: a.config,
                out,
                resume: a.resume,
                steps: a.steps,
                max_seconds: a.max_seconds,
                eval_views: a.eval_views,
                downscale: a.downscale,
                gpu,
                progress: true,
                fault: a.inject_fault,
            };
            let report = run::train(&request)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some(Command::Eval(a)) => {
            let report = run::eval_checkpoint(&a.checkpoint, &a.data, &a.split, a.views, a.downscale, a.levels, &gpu)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some(Command::Bench(a)) => {
            let report = infnerf::bench::bench(a.data.as_deref(), a.config.as_deref(), a.downscale, a.seconds, &gpu)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Some(Command::MakeScene(a)) => {
            let options = infnerf::scene_gen::SceneOptions {
                width: a.width,
                height: a.height,
                train_views: a.train_views,
                test_views: a.test_views,
                seed: a.seed,
            };
            let format = match a.format {
                SceneFormatArg::Blender => infnerf::scene_gen::SceneFormat::Blender,
                SceneFormatArg::Ngp => infnerf::scene_gen::SceneFormat::Ngp,
            };
            let kind = if a.multiscale {
                infnerf::scene_gen::SceneKind::Multiscale
            } else {
                infnerf::scene_gen::SceneKind::Standard
            };
            infnerf::scene_gen::make_scene_with(&a.out, &options, format, kind)?;
            println!("wrote {}", a.out.display());
        }
    }
    Ok(())
}
