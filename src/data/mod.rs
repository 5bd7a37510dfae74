//! Posed images: the Blender synthetic and instant-ngp / nerfstudio formats, and the image pyramid.
//!
//! Every camera leaves this module already mapped into the scene cube [-1,1]^3 (SPEC §1), in the
//! OpenGL convention (the camera looks down -Z, +Y is up), so nothing downstream knows the format.
//! Pixel (i, j) covers [i, i+1) x [j, j+1) with its centre at (i + 0.5, j + 0.5); j counts rows down.

mod blender;
mod decode;
mod downscale;
mod error;
mod intrinsics;
mod json;
mod ngp;
mod pose;
pub mod pyramid;
mod transforms;
mod views;

pub use error::DataError;
pub use pyramid::{pyramid, scale_camera};

use std::path::Path;

/// An RGB image, linear row-major, values in [0,1], composited on the background already.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` floats, row-major, RGB interleaved.
    pub rgb: Vec<f32>,
    /// `width * height` coverage values of the photo's alpha channel; empty for opaque images.
    /// Training uses it to put random backgrounds behind transparent pixels.
    pub alpha: Vec<f32>,
}

/// A pinhole camera with optional OpenCV radial-tangential distortion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    /// Camera-to-world rotation (columns are the camera's x, y, z axes in the cube frame).
    /// Row-major like `transform_matrix`: `rotation[row][col]`, so the camera's z axis is
    /// `[rotation[0][2], rotation[1][2], rotation[2][2]]` (glam: `Mat3::from_cols_array_2d` needs a transpose).
    pub rotation: [[f32; 3]; 3],
    /// Camera centre in the cube frame.
    pub position: [f32; 3],
    pub width: u32,
    pub height: u32,
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
    /// OpenCV k1, k2, p1, p2; all zero for an ideal pinhole.
    pub distortion: [f32; 4],
}

/// One posed photo.
#[derive(Clone, Debug)]
pub struct View {
    /// The image file it came from, for messages.
    pub name: String,
    pub camera: Camera,
    pub image: Image,
}

/// A loaded scene: its splits, in the cube frame.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Vec<View>,
    pub val: Vec<View>,
    pub test: Vec<View>,
    /// cube = (world - centre) * scale.
    pub centre: [f32; 3],
    pub scale: f32,
    pub background: [f32; 3],
}

/// What loading needs from the settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadOptions {
    /// Colour transparent pixels are composited on.
    pub background: [f32; 3],
    /// For data without a test split: frame i is held out when i % holdout_every == 0 (0: none).
    pub holdout_every: u32,
    /// Half-edge of the world box mapped onto the cube for Blender scenes (centred at the origin).
    pub scene_bound: f32,
    /// Integer factor every image shrinks by while it is decoded (N x N block means; intrinsics / N);
    /// 0: automatic, 1 unless the decoded images would not fit `memory_budget`.
    pub downscale: u32,
    /// Host bytes the decoded images may take in automatic mode; None: half of MemAvailable
    /// (/proc/meminfo), or 8 GiB where that cannot be read.
    pub memory_budget: Option<u64>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::from(&crate::config::DataConfig::default())
    }
}

impl From<&crate::config::DataConfig> for LoadOptions {
    fn from(c: &crate::config::DataConfig) -> Self {
        Self {
            background: c.background,
            holdout_every: c.holdout_every,
            scene_bound: c.scene_bound,
            downscale: c.downscale,
            memory_budget: None,
        }
    }
}

/// Loads the dataset in `dir`: Blender when it holds `transforms_train.json`, instant-ngp / nerfstudio
/// when it holds `transforms.json`. Images are decoded in parallel, composited on the background and
/// shrunk by `opts.downscale` (or the automatic factor) one at a time.
pub fn load_dataset(dir: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    if !(opts.scene_bound.is_finite() && opts.scene_bound > 0.0) {
        let message = format!("must be a positive number, got {}", opts.scene_bound);
        return Err(DataError::Options { field: "scene_bound", message });
    }
    if !opts.background.iter().all(|c| (0.0..=1.0).contains(c)) {
        let message = format!("must have components in [0, 1], got {:?}", opts.background);
        return Err(DataError::Options { field: "background", message });
    }
    if opts.downscale > crate::config::MAX_DOWNSCALE {
        let message =
            format!("must be at most {} (0: automatic), got {}", crate::config::MAX_DOWNSCALE, opts.downscale);
        return Err(DataError::Options { field: "downscale", message });
    }
    if dir.join(blender::TRAIN_FILE).is_file() {
        blender::load(dir, opts)
    } else if dir.join(ngp::FILE).is_file() {
        ngp::load(dir, opts)
    } else if !dir.is_dir() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory");
        Err(DataError::Read { file: dir.to_path_buf(), source })
    } else {
        let looked_for = format!("{} (Blender) or {} (instant-ngp / nerfstudio)", blender::TRAIN_FILE, ngp::FILE);
        Err(DataError::NoDataset { dir: dir.to_path_buf(), looked_for })
    }
}
