//! The window: the render in the middle, controls, settings and the octree on the left, plots on
//! the right, a status line on top. Keys in the manner of instant-ngp: T or Space toggle training,
//! G ground truth beside the render, O the error, 1-6 the render modes, [ and ] the previous and
//! next training view; W A S D Q E fly.

use super::camera::FreeCamera;
use super::controller::Controller;
use super::picture::{colour_image, level_colour, level_shares, picture, Mode};
use super::refresh::{Refresh, ViewKey};
use super::ViewRequest;
use crate::config::LIVE_SETTINGS;
use crate::data::pyramid::{pyramid, scale_camera};
use crate::data::{Camera, Image};
use crate::loss_weights::{schedule_curve, Group};
use crate::octree::{Node, Octree};
use crate::trainer::Rendered;
use eframe::egui::{self, Color32, Key, Pos2, Rect, Sense, Stroke, TextureHandle, TextureOptions, Vec2};
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints, VLine};
use glam::Vec3;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The largest free-camera render (the window's default size): more is slow on any device.
const MAX_RENDER: [u32; 2] = [1280, 800];
/// Frames per second drawn while training and nobody touches the window (input always redraws at
/// once): on a GPU the window costs little; on a CPU device each frame is rasterised by the same
/// cores that train, so the plots and status move once a second there.
fn idle_fps(device: eframe::wgpu::DeviceType) -> f32 {
    if device == eframe::wgpu::DeviceType::Cpu {
        1.0
    } else {
        30.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    Train,
    Test,
}

/// Which node boxes are drawn over the render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boxes {
    None,
    All,
    Level(u32),
}

/// The render request in flight: its id, the camera and snapped view it was asked for, its divisor.
#[derive(Clone, Copy)]
struct Pending {
    id: u64,
    free: FreeCamera,
    snapped: Option<(Split, usize)>,
    divisor: u32,
}

/// The image on screen and what it was rendered from.
struct Shown {
    rendered: Rendered,
    camera: Camera,
    free: FreeCamera,
    cut: u32,
    step: u32,
    /// The ground truth at the render's size, when a dataset view was snapped to.
    truth: Option<Image>,
    /// Share of the pixels whose dominant node is at each level.
    level_shares: Vec<f64>,
}

/// Frames per second over the last second, from the app's own frame times.
#[derive(Default)]
struct FrameCounter {
    times: std::collections::VecDeque<f64>,
    total: u64,
    /// Seconds spent building the frames (the app's update: layout and plots, not the raster).
    building: f64,
}

impl FrameCounter {
    fn tick(&mut self, now: f64) {
        self.total += 1;
        self.times.push_back(now);
        while self.times.front().is_some_and(|&t| now - t > 1.0) {
            self.times.pop_front();
        }
    }

    fn fps(&self) -> f64 {
        match (self.times.front(), self.times.back()) {
            (Some(a), Some(b)) if b > a => (self.times.len() - 1) as f64 / (b - a),
            _ => 0.0,
        }
    }
}

pub struct App {
    control: Controller,
    octree: Octree,
    /// Each node's depth in the tree (the level map's colours).
    levels: Vec<u32>,
    node_params: u64,
    adapter: String,
    camera: FreeCamera,
    last_moved: f64,
    mode: Mode,
    /// Tree cut to render (None: the finest).
    cut: Option<u32>,
    /// Ground truth | render | error, for a snapped view.
    compare: bool,
    /// The dataset view snapped to (the free camera still starts from it).
    view: Option<(Split, usize)>,
    refresh: Refresh,
    pending: Option<Pending>,
    shown: Option<Shown>,
    textures: Vec<TextureHandle>,
    texture_mode: Option<(Mode, u32, bool)>,
    shown_serial: u32,
    show_level: Vec<bool>,
    boxes: Boxes,
    selected: Option<u32>,
    frames: FrameCounter,
    clock: Instant,
    eval_every: u32,
    eval_views: usize,
    last_eval: u32,
    log_scale: bool,
    settings_path: String,
    snapshot_path: String,
    screenshot_times: Vec<f64>,
    screenshots_taken: Arc<AtomicUsize>,
    screenshots_requested: usize,
    exit_after_screenshots: bool,
    steps_at_open: u32,
    /// Redraws per second while nothing but training changes (`idle_fps`; a View-panel setting).
    idle_fps: f32,
}

impl App {
    pub fn new(cc: &eframe::CreationContext<'_>, control: Controller, request: &ViewRequest) -> Self {
        cc.egui_ctx.set_visuals(egui::Visuals::dark());
        let (octree, node_params, adapter) =
            (control.octree.clone(), control.node_params, control.gpu.info.name.clone());
        let levels: Vec<u32> = octree.nodes.iter().map(|n| n.depth).collect();
        let depth = octree.max_depth();
        let snapshot_path = control.snapshot_path().display().to_string();
        let settings_path = control.out.join("settings.toml").display().to_string();
        let steps_at_open = control.status.step;
        Self {
            octree,
            levels,
            node_params,
            adapter,
            camera: FreeCamera::default(),
            last_moved: -1.0,
            mode: Mode::Rgb,
            cut: None,
            compare: false,
            view: None,
            refresh: Refresh::default(),
            pending: None,
            shown: None,
            textures: Vec::new(),
            texture_mode: None,
            shown_serial: 0,
            show_level: vec![true; depth as usize + 1],
            boxes: Boxes::None,
            selected: None,
            frames: FrameCounter::default(),
            clock: Instant::now(),
            eval_every: 1000,
            eval_views: 2,
            last_eval: control.status.step,
            log_scale: true,
            settings_path,
            snapshot_path,
            screenshot_times: request.screenshots.clone(),
            screenshots_taken: Arc::default(),
            screenshots_requested: 0,
            exit_after_screenshots: request.exit,
            steps_at_open,
            idle_fps: request
                .fps
                .unwrap_or_else(|| idle_fps(control.gpu.info.device_type))
                .clamp(*super::REDRAW_RANGE.start(), *super::REDRAW_RANGE.end()),
            control,
        }
    }

    fn now(&self) -> f64 {
        self.clock.elapsed().as_secs_f64()
    }

    fn depth(&self) -> u32 {
        self.octree.max_depth()
    }

    fn dataset_view(&self, (split, index): (Split, usize)) -> Option<&crate::data::View> {
        let dataset = &self.control.dataset;
        match split {
            Split::Train => dataset.train.get(index),
            Split::Test => dataset.test.get(index).or_else(|| dataset.val.get(index)),
        }
    }

    fn snap(&mut self, target: (Split, usize)) {
        if let Some(view) = self.dataset_view(target) {
            self.camera = FreeCamera::snap(&view.camera);
            self.view = Some(target);
        }
    }

    /// Steps through the training views (`[` and `]`).
    fn next_view(&mut self, forward: bool) {
        let n = self.control.dataset.train.len();
        if n == 0 {
            return;
        }
        let current = match self.view {
            Some((Split::Train, i)) => i,
            _ => n - 1,
        };
        let next = if forward { (current + 1) % n } else { (current + n - 1) % n };
        self.snap((Split::Train, next));
    }

    fn view_key(&self, size: [u32; 2]) -> ViewKey {
        let mut h = DefaultHasher::new();
        let c = &self.camera;
        for v in [c.target.x, c.target.y, c.target.z, c.yaw, c.pitch, c.distance, c.fov_y] {
            v.to_bits().hash(&mut h);
        }
        c.exact.map(|e| e.position.map(f32::to_bits)).hash(&mut h);
        self.cut.hash(&mut h);
        size.hash(&mut h);
        h.finish()
    }

    /// Sends a render request if one is due: `size` is the full resolution of the free view.
    fn request_render(&mut self, size: [u32; 2]) {
        let now = self.now();
        let snapped = self.camera.exact.and(self.view);
        let full = match snapped.and_then(|v| self.dataset_view(v)) {
            Some(view) => [view.camera.width, view.camera.height],
            None => size,
        };
        let key = self.view_key(full);
        let moving = now - self.last_moved < 0.25;
        let pixels = u64::from(full[0]) * u64::from(full[1]);
        let Some(divisor) = self.refresh.due(now, key, pixels, moving, self.control.status.step) else { return };
        let camera = match snapped.and_then(|v| self.dataset_view(v)) {
            Some(view) => scale_camera(&view.camera, divisor.trailing_zeros()),
            None => self.camera.camera((full[0] / divisor).max(1), (full[1] / divisor).max(1)),
        };
        let cut = self.cut.unwrap_or(self.depth()).min(self.depth());
        let id = self.control.render(camera, cut);
        self.refresh.sent(now, key, divisor);
        self.pending = Some(Pending { id, free: self.camera, snapped, divisor });
    }

    fn receive(&mut self, arrivals: Vec<super::controller::Arrival>) {
        for arrival in arrivals {
            let Some(Pending { id, free, snapped, divisor }) = self.pending else { continue };
            if arrival.id != id {
                continue;
            }
            self.pending = None;
            let (w, h) = (arrival.image.rgb.width, arrival.image.rgb.height);
            self.refresh.arrived(self.now(), u64::from(w) * u64::from(h), arrival.step);
            let camera = match snapped.and_then(|v| self.dataset_view(v)) {
                Some(view) => scale_camera(&view.camera, divisor.trailing_zeros()),
                None => free.camera(w, h),
            };
            let truth = snapped.and_then(|v| self.dataset_view(v)).and_then(|view| {
                let level = divisor.trailing_zeros() as usize;
                pyramid(&view.image, level + 1).into_iter().nth(level).filter(|t| t.width == w && t.height == h)
            });
            self.shown = Some(Shown {
                level_shares: level_shares(&arrival.image, &self.levels),
                rendered: arrival.image,
                camera,
                free,
                cut: arrival.cut,
                step: arrival.step,
                truth,
            });
            self.shown_serial = self.shown_serial.wrapping_add(1);
        }
    }

    /// (Re)builds the textures of the shown image for the current mode.
    fn update_textures(&mut self, ctx: &egui::Context) {
        let Some(shown) = &self.shown else { return };
        let want = (self.mode, self.shown_serial, self.compare);
        if self.texture_mode == Some(want) {
            return;
        }
        let mut images = Vec::new();
        let mut main = picture(self.mode, &shown.rendered, &shown.camera, &self.levels, shown.truth.as_ref());
        if self.mode == Mode::Levels {
            // hidden levels darkened
            for (i, pixel) in main.pixels.iter_mut().enumerate() {
                if let Some(level) = super::picture::pixel_level(&shown.rendered, &self.levels, i) {
                    if !self.show_level.get(level as usize).copied().unwrap_or(true) {
                        *pixel = Color32::from_gray(30);
                    }
                }
            }
        }
        if self.compare {
            if let Some(truth) = &shown.truth {
                images.push(colour_image(truth));
                images.push(main);
                images.push(picture(Mode::Error, &shown.rendered, &shown.camera, &self.levels, Some(truth)));
            } else {
                images.push(main);
            }
        } else {
            images.push(main);
        }
        self.textures = images
            .into_iter()
            .enumerate()
            .map(|(i, image)| ctx.load_texture(format!("render{i}"), image, TextureOptions::NEAREST))
            .collect();
        self.texture_mode = Some(want);
    }

    fn keys(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let pressed = |key| ctx.input(|i| i.key_pressed(key));
        if pressed(Key::T) || pressed(Key::Space) {
            self.control.toggle_training();
        }
        if pressed(Key::G) {
            self.compare = !self.compare;
        }
        if pressed(Key::O) {
            self.mode = if self.mode == Mode::Error { Mode::Rgb } else { Mode::Error };
        }
        let numbers = [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6];
        for (key, mode) in numbers.into_iter().zip(Mode::ALL) {
            if pressed(key) {
                self.mode = mode;
            }
        }
        if pressed(Key::OpenBracket) {
            self.next_view(false);
        }
        if pressed(Key::CloseBracket) {
            self.next_view(true);
        }
        let dt = ctx.input(|i| i.stable_dt).min(0.1);
        let held = |key| ctx.input(|i| i.key_down(key));
        let axis = |plus, minus| f32::from(u8::from(held(plus))) - f32::from(u8::from(held(minus)));
        let step = Vec3::new(axis(Key::D, Key::A), axis(Key::E, Key::Q), axis(Key::W, Key::S));
        if step != Vec3::ZERO {
            self.camera.fly(step * dt);
            self.moved();
        }
    }

    fn moved(&mut self) {
        self.last_moved = self.now();
    }

    fn status_line(&self, ui: &mut egui::Ui) {
        let s = &self.control.status;
        let state = if s.finished {
            "finished"
        } else if s.training {
            "training"
        } else {
            "paused"
        };
        ui.horizontal(|ui| {
            ui.strong(format!("step {}", s.step));
            ui.label(format!(
                "{state} | {:.0} rays/s | {:.2} dB | {} sampling, {:.1} evaluations/ray | {:.0} s | {} | GPU {:.0} MiB{} | \
                 {:.0} fps",
                s.rays_per_s,
                s.psnr_train,
                s.sampling_phase,
                s.evaluated_per_ray,
                s.elapsed_s,
                self.adapter,
                s.gpu_bytes as f64 / f64::from(1u32 << 20),
                if s.precision == "mixed" { format!(", mixed f16, loss scale {}", s.loss_scale) } else { String::new() },
                self.frames.fps()
            ));
        });
    }

    fn controls(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = if self.control.status.training { "Pause (T)" } else { "Train (T)" };
            if ui.button(label).clicked() {
                self.control.toggle_training();
            }
            if ui.button("Step").on_hover_text("train one step, then pause").clicked() {
                self.control.single_step(1);
            }
            if ui.button("Evaluate").on_hover_text("test PSNR on a few views").clicked() {
                self.control.evaluate(self.eval_views);
            }
            if ui.button("Screenshot").clicked() {
                self.screenshot(ui.ctx(), None);
            }
        });
        ui.horizontal(|ui| {
            ui.label("test every");
            ui.add(egui::DragValue::new(&mut self.eval_every).speed(50).suffix(" steps"));
            ui.add(egui::DragValue::new(&mut self.eval_views).range(1..=64).suffix(" views"));
        });
        ui.horizontal(|ui| {
            ui.text_edit_singleline(&mut self.snapshot_path);
        });
        ui.horizontal(|ui| {
            if ui.button("Save snapshot").clicked() {
                self.control.save_snapshot(&PathBuf::from(&self.snapshot_path));
            }
            if ui.button("Load snapshot").on_hover_text("continue training from it (paused)").clicked() {
                if let Err(error) = self.control.load_snapshot(&PathBuf::from(&self.snapshot_path)) {
                    self.control.messages.push(format!("{error:#}"));
                }
                self.refresh.invalidate();
            }
        });
    }

    fn view_panel(&mut self, ui: &mut egui::Ui) {
        ui.horizontal_wrapped(|ui| {
            for (i, mode) in Mode::ALL.into_iter().enumerate() {
                ui.selectable_value(&mut self.mode, mode, format!("{} {}", i + 1, mode.name()));
            }
        });
        let depth = self.depth();
        ui.horizontal(|ui| {
            ui.label("tree cut");
            let mut cut = self.cut.unwrap_or(depth);
            if ui.add(egui::Slider::new(&mut cut, 0..=depth)).changed() {
                self.cut = (cut != depth).then_some(cut);
                self.refresh.invalidate();
            }
        });
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.compare, "truth | render | error (G)");
        });
        ui.horizontal(|ui| {
            let (n_train, n_test) = (self.control.dataset.train.len(), self.control.dataset.test.len());
            let (mut split, mut index) = self.view.unwrap_or((Split::Train, 0));
            ui.selectable_value(&mut split, Split::Train, "train");
            ui.selectable_value(&mut split, Split::Test, "test");
            let n = if split == Split::Train { n_train } else { n_test.max(self.control.dataset.val.len()) };
            ui.add(egui::DragValue::new(&mut index).range(0..=n.saturating_sub(1)));
            if ui.button("Snap").clicked() || self.view.is_some_and(|v| v != (split, index)) {
                self.snap((split, index));
            }
            if ui.button("Free").on_hover_text("back to the default orbit").clicked() {
                self.camera = FreeCamera::default();
                self.view = None;
            }
        });
        ui.horizontal(|ui| {
            ui.label("redraws/s");
            ui.add(egui::Slider::new(&mut self.idle_fps, super::REDRAW_RANGE).logarithmic(true))
                .on_hover_text("frames per second while only training moves (input always redraws at once)");
        });
        ui.horizontal(|ui| {
            ui.label("refresh share");
            ui.add(egui::Slider::new(&mut self.refresh.share, 0.02..=0.5))
                .on_hover_text("the share of time a resting view's re-renders may take while training");
        });
    }

    fn settings_panel(&mut self, ui: &mut egui::Ui) {
        let mut changes = Vec::new();
        egui::Grid::new("settings").num_columns(2).striped(true).show(ui, |ui| {
            for key in LIVE_SETTINGS {
                let Some(mut value) = self.control.config.live(key) else { continue };
                ui.label(key.split_once('.').map_or(key, |(_, k)| k)).on_hover_text(key);
                let response = if key.starts_with("schedule.override_") {
                    let mut auto = value.is_nan();
                    let r = ui.horizontal(|ui| {
                        let mut r = ui.checkbox(&mut auto, "auto");
                        if auto {
                            value = f64::NAN;
                        } else {
                            if value.is_nan() {
                                value = 1.0;
                            }
                            r = r.union(ui.add(egui::DragValue::new(&mut value).speed(0.01).range(0.0..=100.0)));
                        }
                        r
                    });
                    r.inner
                } else if key.starts_with("loss.lambda_") || key.starts_with("train.lr_") && !is_count(key) {
                    ui.add(
                        egui::Slider::new(&mut value, 0.0..=slider_max(key)).logarithmic(true).smallest_positive(1e-6),
                    )
                } else if key == "schedule.balancer" {
                    let mut on = value != 0.0;
                    let r = ui.checkbox(&mut on, "");
                    value = f64::from(u8::from(on));
                    r
                } else if key == "loss.coarse_every" {
                    // every Nth step: a whole number of at least 1
                    let r = ui.add(egui::DragValue::new(&mut value).speed(0.05).range(1.0..=1000.0).fixed_decimals(0));
                    value = value.round();
                    r
                } else if is_count(key) {
                    ui.add(egui::DragValue::new(&mut value).speed(10.0).range(0.0..=1e9))
                } else {
                    {
                        let speed = 0.001 * value.abs().max(1.0);
                        ui.add(egui::DragValue::new(&mut value).speed(speed))
                    }
                };
                ui.end_row();
                let term = key.strip_prefix("loss.lambda_").unwrap_or_default();
                if let Some(reason) = self.control.status.unavailable.get(term) {
                    ui.label("");
                    ui.colored_label(ui.visuals().warn_fg_color, "unavailable: held at 0").on_hover_text(reason);
                    ui.end_row();
                }
                // a drag applies when released, a click or typed value at once
                if response.drag_stopped() || (response.changed() && !response.dragged()) {
                    changes.push((key, value));
                } else if response.changed() {
                    // live preview of the schedule while dragging
                    let _ = self.control.config.set_live(key, value);
                }
            }
        });
        for (key, value) in changes {
            if let Err(error) = self.control.set(key, value) {
                self.control.messages.push(format!("{error:#}"));
            }
        }
        ui.horizontal(|ui| {
            if ui.button("Reset to config").clicked() {
                if let Err(error) = self.control.reset_settings() {
                    self.control.messages.push(format!("{error:#}"));
                }
            }
            if ui.button("Save as").clicked() {
                if let Err(error) = self.control.save_settings(&PathBuf::from(&self.settings_path)) {
                    self.control.messages.push(format!("{error:#}"));
                }
            }
        });
        ui.text_edit_singleline(&mut self.settings_path);
    }

    fn octree_panel(&mut self, ui: &mut egui::Ui) {
        let counts = self.octree.depth_counts();
        let shares = self.shown.as_ref().map(|s| s.level_shares.clone()).unwrap_or_default();
        egui::Grid::new("octree").num_columns(6).striped(true).show(ui, |ui| {
            for h in ["level", "show", "nodes", "params", "MiB", "pixels"] {
                ui.strong(h);
            }
            ui.end_row();
            for (level, &n) in counts.iter().enumerate() {
                let params = n as u64 * self.node_params;
                ui.colored_label(level_colour(level as u32), format!("level {level}"));
                if let Some(show) = self.show_level.get_mut(level) {
                    if ui.checkbox(show, "").changed() {
                        self.texture_mode = None;
                    }
                }
                ui.label(n.to_string());
                ui.label(format!("{:.2}M", params as f64 / 1e6));
                // parameters, gradients and Adam's two moments, f32 each
                ui.label(format!("{:.1}", (params * 16) as f64 / f64::from(1u32 << 20)));
                ui.label(shares.get(level).map_or("-".into(), |s| format!("{:.0}%", 100.0 * s)));
                ui.end_row();
            }
        });
        ui.horizontal(|ui| {
            ui.label("boxes");
            ui.selectable_value(&mut self.boxes, Boxes::None, "none");
            ui.selectable_value(&mut self.boxes, Boxes::All, "all");
            for level in 0..=self.depth() {
                ui.selectable_value(&mut self.boxes, Boxes::Level(level), level.to_string());
            }
        });
        match self.selected.and_then(|i| self.octree.nodes.get(i as usize).map(|n| (i, n))) {
            Some((i, node)) => {
                ui.label(format!(
                    "node {i}: level {}, min ({:.3}, {:.3}, {:.3}), edge {:.4}, gsd {:.5}, {} params",
                    node.depth, node.min[0], node.min[1], node.min[2], node.edge, node.gsd, self.node_params
                ));
            }
            None => {
                ui.weak("click the render to pick a node");
            }
        }
    }

    fn plots(&mut self, ui: &mut egui::Ui) {
        ui.checkbox(&mut self.log_scale, "log scale (losses, rates)");
        let now = f64::from(self.control.status.step);
        let h = &self.control.history;
        let log = self.log_scale;
        let transform = |v: f64, log: bool| if log { v.max(1e-12).log10() } else { v };
        let lines = |names: &[(String, String)], log: bool| -> Vec<(String, Vec<[f64; 2]>)> {
            names
                .iter()
                // a term that is off (all zeros) would only clutter the plot
                .filter_map(|(name, label)| h.get(name).filter(|s| s.iter().any(|p| p[1] != 0.0)).map(|s| (label, s)))
                .map(|(label, s)| (label.clone(), s.iter().map(|p| [p[0], transform(p[1], log)]).collect()))
                .collect()
        };
        let markers: Vec<f64> = h.anomalies.iter().map(|&s| f64::from(s)).collect();
        let events: Vec<f64> = h.events.iter().map(|(s, _)| f64::from(*s)).collect();
        let plot = |ui: &mut egui::Ui,
                    id: &str,
                    series: Vec<(String, Vec<[f64; 2]>)>,
                    log: bool,
                    extra: &dyn Fn(&mut egui_plot::PlotUi)| {
            ui.label(id);
            // a flat curve (a setting that stays put) or none at all would get a meaningless range
            let (lo, hi) = series
                .iter()
                .flat_map(|(_, points)| points.iter().map(|p| p[1]))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let mut frame = Plot::new(id);
            if series.is_empty() {
                frame = frame.include_x(0.0).include_x(now.max(1.0)).include_y(0.0).include_y(1.0);
            } else if hi - lo <= 1e-9 * hi.abs().max(1.0) {
                let pad = if log { 1.0 } else { 0.5 * hi.abs().max(1.0) };
                frame = frame.include_y(lo - pad).include_y(hi + pad);
            }
            frame
                .height(120.0)
                .legend(Legend::default())
                .y_axis_formatter(move |mark, _| {
                    if log {
                        format!("{:.0e}", 10f64.powf(mark.value))
                    } else {
                        format!("{:.3}", mark.value)
                    }
                })
                .show(ui, |p| {
                    for (name, points) in series {
                        p.line(Line::new(name, PlotPoints::from(points)));
                    }
                    extra(p);
                });
        };
        let with_markers = |p: &mut egui_plot::PlotUi| {
            for &x in &markers {
                p.vline(VLine::new("anomaly", x).color(Color32::RED));
            }
            for &x in &events {
                p.vline(
                    VLine::new("setting changed", x)
                        .color(Color32::from_rgb(120, 120, 255))
                        .style(LineStyle::dashed_dense()),
                );
            }
        };
        egui::ScrollArea::vertical().show(ui, |ui| {
            let names = |pairs: &[&str]| pairs.iter().map(|n| (n.to_string(), n.to_string())).collect::<Vec<_>>();
            plot(ui, "PSNR (dB)", lines(&names(&["psnr_train", "psnr_test"]), false), false, &with_markers);
            let terms: Vec<(String, String)> = h
                .names_with("loss/")
                .into_iter()
                .filter(|n| n.ends_with("/cut0"))
                .map(|n| (n.to_string(), n.trim_start_matches("loss/").trim_end_matches("/cut0").to_string()))
                .collect();
            plot(ui, "loss terms (finest cut)", lines(&terms, log), log, &with_markers);
            let levels = labelled(h, "loss/mse/");
            plot(ui, "MSE per rendered cut (slot: 0 finest)", lines(&levels, log), log, &|_| {});
            let weights = labelled(h, "weight/");
            plot(ui, "loss weights (lambda x schedule x balancer)", lines(&weights, log), log, &with_markers);
            // the schedule over the whole run, from its pure functions: redrawn as settings change
            let config = &self.control.config;
            let end = config.train.steps.min(now as u32 * 2 + 1000).max(1000);
            let curve = schedule_curve(0..end, 200, &config.schedule);
            let schedule: Vec<(String, Vec<[f64; 2]>)> = Group::ALL
                .iter()
                .map(|&g| (g.name().to_string(), curve.iter().map(|(s, w)| [f64::from(*s), w.get(g)]).collect()))
                .collect();
            plot(ui, "schedule (group multipliers, whole run)", schedule, false, &|p| {
                p.vline(VLine::new("now", now).color(Color32::WHITE));
            });
            let balancer = labelled(h, "balancer/");
            plot(ui, "balancer weights", lines(&balancer, false), false, &|_| {});
            let t = &config.train;
            let planned: Vec<(String, Vec<[f64; 2]>)> = [("lr_hash planned", t.lr_hash), ("lr_mlp planned", t.lr_mlp)]
                .into_iter()
                .map(|(name, base)| {
                    let points = (0..=200)
                        .map(|i| {
                            let step = (u64::from(end) * i / 200) as u32;
                            [
                                f64::from(step),
                                transform(f64::from(base * t.lr_factor(step, &self.control.lr_state)), log),
                            ]
                        })
                        .collect();
                    (name.to_string(), points)
                })
                .collect();
            let mut lr = lines(&names(&["lr_hash", "lr_mlp"]), log);
            lr.extend(planned);
            plot(ui, "learning rate per group", lr, log, &|p| {
                p.vline(VLine::new("now", now).color(Color32::WHITE));
            });
            plot(ui, "rays/s", lines(&names(&["rays_per_s"]), false), false, &|_| {});
            // the sampling schedule's switches (SPEC §5): the proposal from hierarchical_from, the
            // grid's skipping from occupancy_warmup
            let switches: Vec<(&str, u32)> =
                [("hierarchical", t.hierarchical_from), ("skipping", Some(t.occupancy_warmup))]
                    .into_iter()
                    .filter_map(|(name, step)| step.map(|s| (name, s)))
                    .collect();
            let evaluations = lines(&names(&["evaluated_per_ray"]), false);
            plot(ui, "field evaluations per ray (proposal included)", evaluations, false, &|p| {
                for &(name, step) in &switches {
                    p.vline(VLine::new(name, f64::from(step)).color(Color32::GRAY));
                }
            });
            let budget = f64::from(t.memory_budget_mb);
            let memory = lines(&names(&["gpu_mib", "peak_gpu_mib"]), false);
            let backward = if t.recompute_backward { "recomputes" } else { "reads stored activations" };
            let title =
                format!("device memory allocated, MiB (white: train.memory_budget_mb; the backward {backward})");
            plot(ui, &title, memory, false, &|p| {
                if budget > 0.0 {
                    p.hline(egui_plot::HLine::new("budget", budget).color(Color32::WHITE));
                }
            });
            plot(ui, "rays through the passes at once", lines(&names(&["chunk_rays"]), false), false, &|_| {});
            let mut grad = lines(&names(&["grad_norm", "grad_norm_mean"]), log);
            grad.extend(lines(&labelled(h, "grad_norm/"), log));
            plot(ui, "gradient norm (global, per tensor; red: anomalies)", grad, log, &with_markers);
            plot(ui, "largest gradient per tensor", lines(&labelled(h, "grad_max/"), log), log, &with_markers);
            let guard = names(&["skipped_steps", "clipped_steps"]);
            plot(ui, "steps skipped (anomalies) and clipped, per log line", lines(&guard, false), false, &|_| {});
            if t.precision == crate::config::Precision::Mixed {
                let scale = lines(&names(&["loss_scale"]), true);
                plot(ui, "loss scale (mixed precision; log)", scale, true, &|_| {});
                let overflows = lines(&names(&["overflow_steps"]), false);
                plot(ui, "steps that overflowed f16 (skipped, scale halved), per log line", overflows, false, &|_| {});
            } else {
                ui.label("loss scale: none (train.precision = \"f32\")");
            }
        });
    }

    fn messages(&self, ui: &mut egui::Ui) {
        for message in self.control.messages.iter().rev().take(6) {
            ui.label(egui::RichText::new(message).small());
        }
    }

    /// The render (or truth | render | error) in `rect`, with the camera's mouse controls.
    fn central(&mut self, ui: &mut egui::Ui) {
        let rect = ui.available_rect_before_wrap();
        let response = ui.allocate_rect(rect, Sense::click_and_drag());
        let delta = response.drag_delta();
        if response.dragged_by(egui::PointerButton::Primary) && delta != Vec2::ZERO {
            self.camera.orbit(delta.x, delta.y);
            self.moved();
        }
        if (response.dragged_by(egui::PointerButton::Secondary) || response.dragged_by(egui::PointerButton::Middle))
            && delta != Vec2::ZERO
        {
            self.camera.pan(delta.x, delta.y);
            self.moved();
        }
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                self.camera.zoom(scroll);
                self.moved();
            }
        }
        let ppp = ui.ctx().pixels_per_point();
        let size = [
            ((rect.width() * ppp) as u32).clamp(8, MAX_RENDER[0]),
            ((rect.height() * ppp) as u32).clamp(8, MAX_RENDER[1]),
        ];
        self.request_render(size);
        self.update_textures(ui.ctx());
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 0.0, Color32::from_gray(16));
        let Some(shown) = &self.shown else {
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "rendering...",
                egui::FontId::proportional(16.0),
                Color32::GRAY,
            );
            return;
        };
        let n = self.textures.len().max(1) as f32;
        let aspect = shown.camera.width as f32 / shown.camera.height as f32;
        let slot = Vec2::new(rect.width() / n, rect.height());
        let fit = if slot.x / slot.y > aspect {
            Vec2::new(slot.y * aspect, slot.y)
        } else {
            Vec2::new(slot.x, slot.x / aspect)
        };
        let mut image_rects = Vec::new();
        for (i, texture) in self.textures.iter().enumerate() {
            let centre = Pos2::new(rect.left() + slot.x * (i as f32 + 0.5), rect.center().y);
            let r = Rect::from_center_size(centre, fit);
            painter.image(texture.id(), r, Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)), Color32::WHITE);
            image_rects.push(r);
        }
        // the render's rect: the middle one of three, else the only one
        let render_rect = image_rects[if image_rects.len() == 3 { 1 } else { 0 }];
        if response.clicked() {
            if let Some(pos) = response.interact_pointer_pos().filter(|p| render_rect.contains(*p)) {
                let u = (pos - render_rect.min) / render_rect.size();
                let (w, h) = (shown.camera.width as f32, shown.camera.height as f32);
                let i = (u.y * h).min(h - 1.0) as usize * shown.camera.width as usize + (u.x * w).min(w - 1.0) as usize;
                self.selected = shown.rendered.node.get(i).filter(|n| **n >= 0.0).map(|n| *n as u32);
            }
        }
        let boxes: Vec<(u32, &Node)> = match self.boxes {
            Boxes::None => Vec::new(),
            Boxes::All => self.octree.nodes.iter().enumerate().map(|(i, n)| (i as u32, n)).collect(),
            Boxes::Level(l) => {
                self.octree.nodes.iter().enumerate().filter(|(_, n)| n.depth == l).map(|(i, n)| (i as u32, n)).collect()
            }
        };
        let selected = self.selected.and_then(|i| self.octree.nodes.get(i as usize).map(|n| (i, n)));
        for (i, node) in boxes.into_iter().chain(selected) {
            let colour = if Some(i) == self.selected { Color32::WHITE } else { level_colour(node.depth) };
            draw_box(&painter, &shown.free, &shown.camera, render_rect, node, colour);
        }
        if self.mode == Mode::Levels {
            let mut y = render_rect.top() + 4.0;
            for level in 0..=self.depth() {
                painter.text(
                    Pos2::new(render_rect.left() + 6.0, y),
                    egui::Align2::LEFT_TOP,
                    format!("level {level}"),
                    egui::FontId::proportional(13.0),
                    level_colour(level),
                );
                y += 16.0;
            }
        }
        let caption = format!(
            "{} | {}x{} | cut {} | step {}{}",
            self.mode.name(),
            shown.camera.width,
            shown.camera.height,
            shown.cut,
            shown.step,
            if self.refresh.pending() { " | rendering" } else { "" }
        );
        painter.text(
            rect.left_bottom() + Vec2::new(6.0, -6.0),
            egui::Align2::LEFT_BOTTOM,
            caption,
            egui::FontId::monospace(12.0),
            Color32::LIGHT_GRAY,
        );
    }

    /// Saves the window as a PNG: `screenshot-<i>.png` for a scripted one, else by step.
    fn screenshot(&mut self, ctx: &egui::Context, index: Option<usize>) {
        let name = match index {
            Some(i) => format!("screenshot-{i}.png"),
            None => format!("screenshot-step{}.png", self.control.status.step),
        };
        let path = self.control.out.join(name);
        let taken = self.screenshots_taken.clone();
        let repaint = ctx.clone();
        ctx.request_screenshot(move |image| {
            let [w, h] = image.size;
            let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| [c.r(), c.g(), c.b()]).collect();
            match image::RgbImage::from_raw(w as u32, h as u32, bytes).map(|img| img.save(&path)) {
                Some(Ok(())) => log::info!("screenshot saved to {}", path.display()),
                Some(Err(error)) => log::error!("{}: cannot write the screenshot: {error}", path.display()),
                None => log::error!("the screenshot has the wrong size"),
            }
            taken.fetch_add(1, Ordering::SeqCst);
            repaint.request_repaint();
        });
    }

    /// Scripted screenshots (`--screenshot-after`), then the exit (`--exit`).
    fn script(&mut self, ctx: &egui::Context) {
        let now = self.now();
        if let Some(&at) = self.screenshot_times.get(self.screenshots_requested) {
            if now >= at {
                self.screenshots_requested += 1;
                self.screenshot(ctx, Some(self.screenshots_requested));
            }
        }
        let all = self.screenshot_times.len();
        if self.exit_after_screenshots && self.screenshots_taken.load(Ordering::SeqCst) >= all {
            let report = serde_json::json!({
                "fps_last_second": self.frames.fps(),
                "frames": self.frames.total,
                "seconds": now,
                "fps_mean": self.frames.total as f64 / now.max(1e-9),
                "build_ms_mean": 1e3 * self.frames.building / self.frames.total.max(1) as f64,
                "step_at_open": self.steps_at_open,
                "step_at_exit": self.control.status.step,
                "rays_per_s": self.control.status.rays_per_s,
            });
            let path = self.control.out.join("viewer.json");
            if let Err(error) = crate::io::write_atomic(&path, report.to_string().as_bytes()) {
                log::error!("{}: cannot write: {error}", path.display());
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }
}

/// The history's series under `prefix`, each labelled by the rest of its name.
fn labelled(history: &super::history::History, prefix: &str) -> Vec<(String, String)> {
    history.names_with(prefix).into_iter().map(|n| (n.to_string(), n[prefix.len()..].to_string())).collect()
}

fn is_count(key: &str) -> bool {
    matches!(
        key,
        "train.lr_decay_start"
            | "train.lr_decay_steps"
            | "train.log_every"
            | "schedule.balancer_window"
            | "train.lr_plateau_patience"
            | "train.lr_restart_period"
    ) || key.ends_with("_steps")
}

fn slider_max(key: &str) -> f64 {
    if key.starts_with("train.lr_") {
        1.0
    } else {
        10.0
    }
}

/// The 12 edges of `node`'s cube, projected with the camera the image was rendered with.
fn draw_box(painter: &egui::Painter, free: &FreeCamera, camera: &Camera, rect: Rect, node: &Node, colour: Color32) {
    let min = Vec3::from(node.min);
    let corner = |i: usize| min + Vec3::new((i & 1) as f32, ((i >> 1) & 1) as f32, ((i >> 2) & 1) as f32) * node.edge;
    let to_screen = |p: Vec3| {
        free.project(p, camera.width, camera.height).map(|[x, y]| {
            Pos2::new(
                rect.left() + x / camera.width as f32 * rect.width(),
                rect.top() + y / camera.height as f32 * rect.height(),
            )
        })
    };
    for a in 0..8usize {
        for bit in [1, 2, 4] {
            let b = a | bit;
            if b != a {
                if let (Some(p), Some(q)) = (to_screen(corner(a)), to_screen(corner(b))) {
                    painter.line_segment([p, q], Stroke::new(1.0, colour));
                }
            }
        }
    }
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let now = self.now();
        self.frames.tick(now);
        match self.control.poll() {
            Ok(arrivals) => self.receive(arrivals),
            Err(error) => self.control.messages.push(format!("{error:#}")),
        }
        let step = self.control.status.step;
        if self.eval_every > 0 && step >= self.last_eval + self.eval_every {
            self.last_eval = step;
            self.control.evaluate(self.eval_views);
        }
        self.keys(&ctx);
        egui::Panel::top("status").show(ui, |ui| self.status_line(ui));
        egui::Panel::left("controls").default_size(330.0).resizable(true).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                egui::CollapsingHeader::new("Training").default_open(true).show(ui, |ui| self.controls(ui));
                egui::CollapsingHeader::new("View").default_open(true).show(ui, |ui| self.view_panel(ui));
                egui::CollapsingHeader::new("Octree").default_open(true).show(ui, |ui| self.octree_panel(ui));
                egui::CollapsingHeader::new("Settings (live)")
                    .default_open(true)
                    .show(ui, |ui| self.settings_panel(ui));
                egui::CollapsingHeader::new("Messages").default_open(true).show(ui, |ui| self.messages(ui));
            });
        });
        egui::Panel::right("plots").default_size(430.0).resizable(true).show(ui, |ui| self.plots(ui));
        egui::CentralPanel::default().show(ui, |ui| self.central(ui));
        self.frames.building += self.now() - now;
        self.script(&ctx);
        let busy = self.control.status.training || self.refresh.pending();
        let fps = if busy { self.idle_fps.max(0.5) } else { self.idle_fps.clamp(0.5, 4.0) };
        ctx.request_repaint_after(std::time::Duration::from_secs_f32(1.0 / fps));
    }

    fn on_exit(&mut self) {
        if let Err(error) = self.control.shutdown() {
            log::error!("{error:#}");
        }
    }
}
