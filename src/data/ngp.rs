//! The instant-ngp / nerfstudio format: one `transforms.json`, `file_path` with extension relative to it,
//! intrinsics and OpenCV distortion globally or per frame, OpenGL camera-to-world poses.
//!
//! Normalisation into the scene cube (the file's own `scale`/`offset` are not used):
//! - centre: the point nearest (least squares) to all cameras' optical axes, which is what an
//!   inward-facing capture looks at; the cameras' centroid when the axes are nearly parallel or that
//!   point lies behind them (forward-facing and outward-facing captures).
//! - scale = 1 / half-extent, half-extent = 0.5 * mean camera distance to the centre * aabb_scale
//!   (clamped to 1..=16, absent = 1): without `aabb_scale` the cameras sit at radius ~2 around a
//!   cube of content; with instant-ngp's large `aabb_scale` for unbounded scenes they sit inside it.
//!
//! Splits: nerfstudio's `train_filenames` / `val_filenames` / `test_filenames` when present; otherwise
//! frame i of the file (its index in `frames`, so a missing file does not shift the others) is a test
//! frame when i % holdout_every == 0, and val is empty.

use super::decode::decode_images;
use super::json::Obj;
use super::pose::{dot, forward, position, Pose};
use super::transforms::{read_transforms, Frame, OnMissing, Transforms};
use super::views::assemble;
use super::{DataError, Dataset, LoadOptions, View};
use std::collections::HashSet;
use std::path::Path;

pub(crate) const FILE: &str = "transforms.json";

/// The path as written first; the rest rescue files written without their extension.
const SUFFIXES: [&str; 3] = ["", ".png", ".jpg"];

/// How many skipped names the warning lists before "...".
const NAMES_IN_WARNING: usize = 5;

pub(crate) fn load(dir: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let t = read_transforms(&dir.join(FILE), &SUFFIXES, OnMissing::Skip)?;
    report_missing(&t)?;
    let top = Obj::root(&t.file, &t.root)?;
    let aabb_scale = top.opt_positive("aabb_scale")?.unwrap_or(1.0).clamp(1.0, 16.0);
    let poses: Vec<Pose> = t.frames.iter().map(|f| f.pose).collect();
    let centre = focus_point(&poses).unwrap_or_else(|| centroid(&poses));
    let mean_distance = poses.iter().map(|p| distance(position(p), centre)).sum::<f64>() / poses.len() as f64;
    let mean_distance = if mean_distance > 1e-9 {
        mean_distance
    } else {
        log::warn!("{}: all cameras share one position; using a unit scene radius", t.file.display());
        1.0
    };
    let scale = 1.0 / (0.5 * mean_distance * aabb_scale);

    let [train, val, test] = split(&top, &t.frames, opts.holdout_every)?;
    if train.is_empty() {
        let message = "no frame is left for training after the split (check holdout_every or train_filenames)";
        return Err(DataError::NoFrames { file: t.file.clone(), message: message.into() });
    }
    let paths: Vec<_> = [&train, &val, &test].into_iter().flatten().map(|f| f.image.clone()).collect();
    let decoded = decode_images(dir, &paths, opts)?;
    let factor = decoded.downscale.factor;
    let mut images = decoded.images.into_iter();
    let mut views = |frames: &[&Frame]| -> Result<Vec<View>, DataError> {
        assemble(&t.file, frames, images.by_ref().take(frames.len()).collect(), factor, centre, scale)
    };
    let (train, val, test) = (views(&train)?, views(&val)?, views(&test)?);
    let centre = centre.map(|c| c as f32);
    Ok(Dataset { train, val, test, centre, scale: scale as f32, background: opts.background })
}

/// One warning for all skipped frames; an error when nothing is left.
fn report_missing(t: &Transforms) -> Result<(), DataError> {
    if t.missing.is_empty() && !t.frames.is_empty() {
        return Ok(());
    }
    let mut names = t.missing.iter().take(NAMES_IN_WARNING).cloned().collect::<Vec<_>>().join(", ");
    if t.missing.len() > NAMES_IN_WARNING {
        names.push_str(", ...");
    }
    let total = t.missing.len() + t.frames.len();
    if t.frames.is_empty() {
        let message = match total {
            0 => "frames is empty".to_string(),
            n => format!("the image files of all {n} frames are missing ({names})"),
        };
        return Err(DataError::NoFrames { file: t.file.clone(), message });
    }
    log::warn!(
        "{}: skipping {} of {total} frames whose image file is missing: {names}",
        t.file.display(),
        t.missing.len()
    );
    Ok(())
}

/// Frames in [train, val, test] order.
fn split<'a>(top: &Obj, frames: &'a [Frame], holdout_every: u32) -> Result<[Vec<&'a Frame>; 3], DataError> {
    let keys = ["train_filenames", "val_filenames", "test_filenames"];
    if keys.iter().any(|k| top.has(k)) {
        let mut lists: [Vec<&Frame>; 3] = Default::default();
        for (key, list) in keys.into_iter().zip(&mut lists) {
            let mut names = HashSet::new();
            if top.has(key) {
                for (i, value) in top.array(key)?.iter().enumerate() {
                    let name = value.as_str().ok_or_else(|| top.error(format!("{key}[{i}]"), "must be a string"))?;
                    names.insert(normalise(name));
                }
            }
            *list = frames.iter().filter(|f| names.contains(normalise(&f.file_path))).collect();
        }
        return Ok(lists);
    }
    let held_out = |f: &Frame| holdout_every > 0 && f.index.is_multiple_of(holdout_every as usize);
    let train = frames.iter().filter(|f| !held_out(f)).collect();
    let test = frames.iter().filter(|f| held_out(f)).collect();
    Ok([train, Vec::new(), test])
}

fn normalise(path: &str) -> &str {
    path.trim_start_matches("./")
}

/// The least-squares point nearest to every optical axis, or `None` when the axes are too close to
/// parallel to pin it down or it lies behind the cameras on average.
pub(crate) fn focus_point(poses: &[Pose]) -> Option<[f64; 3]> {
    let n = poses.len() as f64;
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for pose in poses {
        let (o, d) = (position(pose), unit(forward(pose))?);
        for i in 0..3 {
            for j in 0..3 {
                // Projection onto the plane across the axis: sum (I - d d^T)(p - o) = 0.
                let m = f64::from(u8::from(i == j)) - d[i] * d[j];
                a[i][j] += m / n;
                b[i] += m * o[j] / n;
            }
        }
    }
    // The mean of projections has eigenvalues in [0, 1] summing to 2, so det is about the smallest one.
    let det = det3(&a);
    if det < 1e-3 {
        return None;
    }
    let p = [0, 1, 2].map(|k| {
        let mut ak = a;
        for (row, bi) in ak.iter_mut().zip(b) {
            row[k] = bi;
        }
        det3(&ak) / det
    });
    let ahead = poses.iter().map(|pose| dot(sub(p, position(pose)), forward(pose))).sum::<f64>();
    (ahead > 0.0).then_some(p)
}

fn centroid(poses: &[Pose]) -> [f64; 3] {
    let n = poses.len().max(1) as f64;
    let sum = poses.iter().fold([0.0; 3], |s, p| {
        let o = position(p);
        [s[0] + o[0], s[1] + o[1], s[2] + o[2]]
    });
    sum.map(|s| s / n)
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    let d = sub(a, b);
    dot(d, d).sqrt()
}

fn unit(v: [f64; 3]) -> Option<[f64; 3]> {
    let len = dot(v, v).sqrt();
    (len > 0.0).then(|| v.map(|x| x / len))
}

#[cfg(test)]
mod tests {
    use super::focus_point;

    /// A camera at `o` looking at `target`, OpenGL convention (only the -Z column matters here).
    fn looking_at(o: [f64; 3], target: [f64; 3]) -> [[f64; 4]; 3] {
        let d = [target[0] - o[0], target[1] - o[1], target[2] - o[2]];
        let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        let z = d.map(|x| -x / len);
        [[0.0, 0.0, z[0], o[0]], [0.0, 0.0, z[1], o[1]], [0.0, 0.0, z[2], o[2]]]
    }

    #[test]
    fn parallel_axes_have_no_focus_point() {
        let poses: Vec<_> = (0..5).map(|i| looking_at([f64::from(i), 0.0, 0.0], [f64::from(i), 0.0, -1.0])).collect();
        assert_eq!(focus_point(&poses), None);
    }

    #[test]
    fn outward_facing_cameras_have_no_focus_point() {
        let poses: Vec<_> = (0..8)
            .map(|i| {
                let a = f64::from(i) * std::f64::consts::FRAC_PI_4;
                let o = [a.cos(), a.sin(), 0.3 * f64::from(i % 2)];
                looking_at(o, [2.0 * o[0], 2.0 * o[1], o[2] + 0.2])
            })
            .collect();
        assert_eq!(focus_point(&poses), None);
    }
}
