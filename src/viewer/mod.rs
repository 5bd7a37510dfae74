//! The live viewer (SPEC §6): an eframe window on the wgpu device the trainer uses, training while
//! it shows. `controller` talks to the trainer thread, `app` draws, `camera`, `picture`, `refresh`
//! and `history` are the pure parts (tested without a window).

pub mod app;
pub mod camera;
pub mod controller;
pub mod history;
pub mod picture;
pub mod refresh;

use crate::gpu::{choose_adapter, device_descriptor, Gpu, GpuOptions};
use crate::run::{Prepared, TrainRequest};
use crate::session::SessionOptions;
use anyhow::{anyhow, Result};
use eframe::egui_wgpu::{WgpuConfiguration, WgpuSetup, WgpuSetupCreateNew};
use history::History;
use std::sync::{Arc, Mutex};

/// What `infnerf view` (or `infnerf` with no arguments) was asked for.
#[derive(Clone, Debug, Default)]
pub struct ViewRequest {
    /// Data, settings, checkpoint to continue (`--checkpoint`), output folder, limits.
    pub train: TrainRequest,
    /// Seconds after the window opens at which to save `screenshot-<i>.png` into the output folder.
    pub screenshots: Vec<f64>,
    /// Close the window after the last scripted screenshot.
    pub exit: bool,
    pub start_paused: bool,
    /// Redraws per second while only training changes (None: the device type's default).
    pub fps: Option<f32>,
}

/// Redraws per second the window accepts (`--fps`, the View panel's "redraws/s").
pub const REDRAW_RANGE: std::ops::RangeInclusive<f32> = 0.5..=60.0;

/// Whether a window can open: on Linux and the BSDs an X11 or Wayland display must be named.
pub fn has_display() -> bool {
    if cfg!(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd", target_os = "netbsd")) {
        ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
    } else {
        true
    }
}

/// Opens the window and trains in it until it is closed; the run's checkpoint is written then.
pub fn run(request: ViewRequest) -> Result<()> {
    let prepared = Prepared::load(&request.train)?;
    let out = request.train.out.clone();
    // a continued run's curve so far, from its metrics.jsonl
    let history = match &prepared.resumed {
        Some(_) => History::load(&out.join("metrics.jsonl")).unwrap_or_else(|error| {
            log::warn!("{error:#}: the plots start empty");
            History::default()
        }),
        None => History::default(),
    };
    let wanted = request.train.gpu.adapter.clone();
    let setup = WgpuSetupCreateNew {
        device_descriptor: Arc::new(|adapter: &eframe::wgpu::Adapter| device_descriptor(adapter)),
        native_adapter_selector: Some(Arc::new(move |adapters: &[eframe::wgpu::Adapter], _surface| {
            choose_adapter(adapters.to_vec(), wanted.as_deref()).map_err(|e| e.to_string())
        })),
        ..WgpuSetupCreateNew::without_display_handle()
    };
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default().with_inner_size([1280.0, 800.0]).with_title("infnerf"),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: WgpuConfiguration { wgpu_setup: WgpuSetup::CreateNew(setup), ..Default::default() },
        ..Default::default()
    };
    let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let failed = failure.clone();
    let elapsed_before = prepared.resumed.as_ref().map_or(0.0, |s| s.elapsed_s);
    let steps = prepared.config.train.steps;
    let gpu_options: GpuOptions = request.train.gpu.clone();
    let result = eframe::run_native(
        "infnerf",
        options,
        Box::new(move |cc| {
            let state = cc.wgpu_render_state.as_ref().ok_or_else(|| anyhow!("eframe opened no wgpu renderer"))?;
            let gpu =
                Arc::new(Gpu::from_device(&state.adapter, state.device.clone(), state.queue.clone(), &gpu_options));
            let dataset = prepared.dataset.clone();
            let started =
                prepared.start(gpu, &out).inspect_err(|e| *failed.lock().expect("lock") = Some(anyhow!("{e:#}")))?;
            let session = SessionOptions {
                max_steps: Some(steps),
                max_seconds: request.train.max_seconds.map(|s| s + elapsed_before),
                start_paused: request.start_paused,
                elapsed_before,
                render_slice: crate::session::RENDER_SLICE,
            };
            let controller =
                controller::Controller::new(started.trainer, dataset, started.metrics, &out, history, session);
            Ok(Box::new(app::App::new(cc, controller, &request)))
        }),
    );
    if let Some(error) = failure.lock().expect("lock").take() {
        return Err(error);
    }
    result.map_err(|e| anyhow!("the viewer window failed: {e}"))
}
