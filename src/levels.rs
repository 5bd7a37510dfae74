//! `infnerf eval --levels`: how each tree cut renders and how the cuts agree (SPEC §1 "multi-scale
//! outputs", the measurements of the loss suite's level terms):
//! - each cut k against the ground truth at its matching pyramid scale: cut k is the tree down to
//!   depth k, whose nodes are split for footprints 2^(D-k) times those of the finest cut D, so it is
//!   rendered at 1/2^(D-k) resolution (the coarsest pyramid level at most) and compared with the
//!   image's pyramid level there;
//! - the depth disagreement between adjacent cuts k and k+1, both rendered at cut k's scale: the mean
//!   absolute difference of their depths (each the expected ray distance over the opacity) where both
//!   are opaque (> 0.5);
//! - where the dataset has ground-truth depth (`make-scene` writes `depth_file_path` and `depth_scale`
//!   per frame), the finest cut's depth error: the mean absolute difference of its z-depth from the
//!   ground truth's over the pixels the ground truth has a surface at, and the rendered one is opaque;
//! - where it also has ground-truth normals (`normal_file_path`), the finest cut's normal angle error:
//!   the mean angle between the normals of its depth map (`viewer::picture::normals`: the surface's
//!   central differences, turned towards the camera) and the truth's, over the same pixels.
//!
//! Depths are in scene units (the cube [-1, 1]^3).

use crate::data::pyramid::{pyramid, scale_camera};
use crate::data::{Camera, Dataset, View};
use crate::metrics::{mse, psnr};
use crate::trainer::{Rendered, Trainer};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Rendered pixels count as a surface above this opacity.
const OPAQUE: f32 = 0.5;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutReport {
    pub cut: u32,
    /// The pyramid level it is compared at (resolution 1/2^level).
    pub level: u32,
    pub psnr: f64,
    /// Mean |depth(cut) - depth(cut + 1)| at this cut's scale; None for the finest cut.
    pub depth_disagreement_with_finer: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepthReport {
    /// Mean |z - z_truth| of the finest cut, scene units.
    pub mean_abs_error: f64,
    /// The same relative to the truth: mean |z - z_truth| / z_truth.
    pub mean_rel_error: f64,
    /// Pixels compared (truth has a surface, render opaque) and those left out (render not opaque).
    pub pixels: usize,
    pub not_opaque: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalReport {
    /// Mean angle between the finest cut's depth-map normals and the truth's, degrees.
    pub mean_angle_deg: f64,
    /// The share of compared pixels within 10 degrees of the truth.
    pub within_10_deg: f64,
    pub pixels: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelsReport {
    pub cuts: Vec<CutReport>,
    /// None when the split has no ground-truth depth.
    pub depth: Option<DepthReport>,
    /// None when the split has no ground-truth normals.
    #[serde(default)]
    pub normals: Option<NormalReport>,
}

/// The levels report of `views` (indices `chosen` of `split`, loaded from `data`).
pub fn evaluate_levels(
    trainer: &Trainer,
    dataset: &Dataset,
    data: &Path,
    split: &str,
    views: &[View],
    chosen: &[usize],
) -> Result<LevelsReport> {
    let finest = trainer.octree.max_depth();
    let levels = trainer.config.data.pyramid_levels;
    let mut psnr_sum = vec![0.0; finest as usize + 1];
    let mut disagreement = vec![(0.0, 0usize); finest as usize];
    let truth = ground_truth_depths(data, split)?;
    let (mut abs_err, mut rel_err, mut pixels, mut not_opaque) = (0.0, 0.0, 0usize, 0usize);
    let (mut angle_sum, mut within_10, mut normal_pixels, mut any_normals) = (0.0, 0usize, 0usize, false);
    for &i in chosen {
        let view = &views[i];
        let images = pyramid(&view.image, levels as usize);
        for k in 0..=finest {
            let level = (finest - k).min(images.len() as u32 - 1);
            let camera = scale_camera(&view.camera, level);
            let rendered = trainer.render(&camera, k)?;
            psnr_sum[k as usize] += psnr(mse(&rendered.rgb.rgb, &images[level as usize].rgb));
            if k < finest {
                let finer = trainer.render(&camera, k + 1)?;
                let (sum, n) = &mut disagreement[k as usize];
                for p in 0..rendered.depth.len() {
                    if let (Some(a), Some(b)) = (surface_depth(&rendered, p), surface_depth(&finer, p)) {
                        *sum += f64::from((a - b).abs());
                        *n += 1;
                    }
                }
            }
            if k == finest {
                let Some(frames) = &truth else { continue };
                let Some(frame) = frames.get(i).and_then(Option::as_ref) else { continue };
                let depth = frame.load(data, dataset.scale)?;
                // the truth's pixels per image pixel (more than 1 when the images were downscaled)
                let f = depth.width / camera.width.max(1);
                if f == 0 || depth.z.len() < (depth.width * camera.height * f) as usize {
                    bail!("{}: {}: smaller than its image", frame.file, frame.path);
                }
                let w = depth.width;
                let normals = match &frame.normal_path {
                    Some(path) => {
                        Some((frame.load_normals(data, path)?, crate::viewer::picture::normals(&rendered, &camera)))
                    }
                    None => None,
                };
                any_normals |= normals.is_some();
                for y in 0..camera.height {
                    for x in 0..camera.width {
                        // the truth's pixel at this pixel's centre (a downscaled load is coarser)
                        let z_truth = depth.z[((y * f + f / 2) * w + x * f + f / 2) as usize];
                        if z_truth <= 0.0 {
                            continue;
                        }
                        let Some(t) = surface_depth(&rendered, (y * camera.width + x) as usize) else {
                            not_opaque += 1;
                            continue;
                        };
                        let z = t / ray_length(&camera, x, y);
                        abs_err += f64::from((z - z_truth).abs());
                        rel_err += f64::from((z - z_truth).abs() / z_truth);
                        pixels += 1;
                        if let Some((truth, rendered_normals)) = &normals {
                            let at = ((y * f + f / 2) * w + x * f + f / 2) as usize;
                            let n = rendered_normals[(y * camera.width + x) as usize];
                            if let (Some(t), Some(n)) = (truth.get(at).copied().flatten(), n) {
                                let angle = f64::from(n.dot(t).clamp(-1.0, 1.0).acos()).to_degrees();
                                angle_sum += angle;
                                within_10 += usize::from(angle <= 10.0);
                                normal_pixels += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    let n = chosen.len().max(1) as f64;
    let cuts = (0..=finest)
        .map(|k| CutReport {
            cut: k,
            level: (finest - k).min(levels - 1),
            psnr: psnr_sum[k as usize] / n,
            depth_disagreement_with_finer: disagreement.get(k as usize).map(|&(sum, n)| sum / n.max(1) as f64),
        })
        .collect();
    let depth = truth.map(|_| DepthReport {
        mean_abs_error: abs_err / pixels.max(1) as f64,
        mean_rel_error: rel_err / pixels.max(1) as f64,
        pixels,
        not_opaque,
    });
    let normals = any_normals.then(|| NormalReport {
        mean_angle_deg: angle_sum / normal_pixels.max(1) as f64,
        within_10_deg: within_10 as f64 / normal_pixels.max(1) as f64,
        pixels: normal_pixels,
    });
    Ok(LevelsReport { cuts, depth, normals })
}

/// Pixel p's ray distance to the surface (expected distance over opacity), where it is opaque.
fn surface_depth(rendered: &Rendered, p: usize) -> Option<f32> {
    let opacity = rendered.opacity[p];
    (opacity > OPAQUE).then(|| rendered.depth[p] / opacity)
}

/// The length of the pixel centre's camera-space ray direction scaled to unit z: distance along the
/// ray / this = depth along the optical axis (a pinhole; the generated scenes have no distortion).
fn ray_length(camera: &Camera, x: u32, y: u32) -> f32 {
    let u = (x as f32 + 0.5 - camera.cx) / camera.fx;
    let v = (y as f32 + 0.5 - camera.cy) / camera.fy;
    (u * u + v * v + 1.0).sqrt()
}

/// One frame's ground-truth depth file: path and metres per 16-bit unit; and its normal file.
struct DepthFrame {
    path: String,
    scale: f64,
    normal_path: Option<String>,
    /// The transforms file, for messages.
    file: String,
}

/// A ground-truth z-depth map in scene units (0 where there is no surface).
struct DepthMap {
    width: u32,
    z: Vec<f32>,
}

impl DepthFrame {
    fn load(&self, data: &Path, scene_scale: f32) -> Result<DepthMap> {
        let path = data.join(&self.path);
        let image = image::open(&path)
            .with_context(|| format!("{}: depth_file_path {}: cannot read", self.file, path.display()))?
            .into_luma16();
        let scale = self.scale * f64::from(scene_scale);
        let z = image.as_raw().iter().map(|&v| (f64::from(v) * scale) as f32).collect();
        Ok(DepthMap { width: image.width(), z })
    }

    /// The ground-truth unit normals (8-bit RGB, n * 0.5 + 0.5), None where a pixel holds no unit
    /// vector (no surface). The scene's normalisation into the cube scales and shifts only, so world
    /// normals are cube normals.
    fn load_normals(&self, data: &Path, normal_path: &str) -> Result<Vec<Option<glam::Vec3>>> {
        let path = data.join(normal_path);
        let image = image::open(&path)
            .with_context(|| format!("{}: normal_file_path {}: cannot read", self.file, path.display()))?
            .into_rgb8();
        Ok(image
            .pixels()
            .map(|p| {
                let v = glam::Vec3::from(p.0.map(|c| f32::from(c) / 255.0 * 2.0 - 1.0));
                // 8 bits keep a unit vector's length within about 1%
                ((v.length() - 1.0).abs() < 0.05).then(|| v.normalize())
            })
            .collect())
    }
}

/// Each frame's depth file in `split`'s transforms file, or None when no frame has one.
fn ground_truth_depths(data: &Path, split: &str) -> Result<Option<Vec<Option<DepthFrame>>>> {
    let file = data.join(format!("transforms_{split}.json"));
    let Ok(text) = std::fs::read_to_string(&file) else { return Ok(None) };
    let name = file.display().to_string();
    let json: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{name}: not valid JSON"))?;
    let Some(frames) = json.get("frames").and_then(|f| f.as_array()) else { return Ok(None) };
    let mut out = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let Some(path) = frame.get("depth_file_path").and_then(|p| p.as_str()) else {
            out.push(None);
            continue;
        };
        let scale = frame.get("depth_scale").and_then(serde_json::Value::as_f64);
        let Some(scale) = scale.filter(|s| s.is_finite() && *s > 0.0) else {
            bail!("{name}: frames[{i}].depth_scale: must be a positive number beside depth_file_path");
        };
        let normal_path = frame.get("normal_file_path").and_then(|p| p.as_str()).map(str::to_string);
        out.push(Some(DepthFrame { path: path.to_string(), scale, normal_path, file: name.clone() }));
    }
    Ok(out.iter().any(Option::is_some).then_some(out))
}
