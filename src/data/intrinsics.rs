//! Camera intrinsics as transforms files give them: globally or per frame, as focal lengths in pixels or
//! as field-of-view angles, with optional principal point, image size and OpenCV distortion.

use super::json::Obj;
use super::DataError;
use std::path::{Path, PathBuf};

/// One value and the field it came from, so a later check can still name it.
#[derive(Clone, Debug)]
struct Given<T> {
    value: T,
    field: String,
}

/// What one object (the top level or a frame) says; a frame's values override the top level's.
#[derive(Clone, Debug, Default)]
pub(crate) struct IntrinsicsSpec {
    fl_x: Option<f64>,
    fl_y: Option<f64>,
    angle_x: Option<f64>,
    angle_y: Option<f64>,
    cx: Option<f64>,
    cy: Option<f64>,
    w: Option<Given<u32>>,
    h: Option<Given<u32>>,
    distortion: [Option<f64>; 4],
    /// Non-zero k3 or k4, which the camera model drops.
    pub unmodelled: bool,
}

/// Resolved pinhole intrinsics in pixels for the image's own size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Intrinsics {
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
    pub distortion: [f32; 4],
}

impl IntrinsicsSpec {
    pub fn parse(obj: &Obj) -> Result<Self, DataError> {
        let size = |key: &str| -> Result<Option<Given<u32>>, DataError> {
            Ok(obj.opt_size(key)?.map(|value| Given { value, field: obj.field(key) }))
        };
        let angle = |key: &str| -> Result<Option<f64>, DataError> {
            match obj.opt_f64(key)? {
                Some(a) if !(a > 0.0 && a < std::f64::consts::PI) => {
                    Err(obj.error(obj.field(key), format!("must be an angle in (0, pi) radians, got {a}")))
                }
                a => Ok(a),
            }
        };
        let camera_model = obj.opt_str("camera_model")?;
        if let Some(model) = camera_model.filter(|m| !matches!(*m, "OPENCV" | "PINHOLE" | "SIMPLE_PINHOLE")) {
            let message = format!("{model} is not supported (OPENCV, PINHOLE or SIMPLE_PINHOLE)");
            return Err(obj.error(obj.field("camera_model"), message));
        }
        let mut unmodelled = false;
        for key in ["k3", "k4"] {
            unmodelled |= obj.opt_f64(key)?.is_some_and(|k| k != 0.0);
        }
        Ok(Self {
            fl_x: obj.opt_positive("fl_x")?,
            fl_y: obj.opt_positive("fl_y")?,
            angle_x: angle("camera_angle_x")?,
            angle_y: angle("camera_angle_y")?,
            cx: obj.opt_f64("cx")?,
            cy: obj.opt_f64("cy")?,
            w: size("w")?,
            h: size("h")?,
            distortion: [obj.opt_f64("k1")?, obj.opt_f64("k2")?, obj.opt_f64("p1")?, obj.opt_f64("p2")?],
            unmodelled,
        })
    }

    /// `self` (a frame's values) over `global` (the top level's); a frame's focal length in either form
    /// overrides the top level's in both forms.
    pub fn over(self, global: &Self) -> Self {
        let g = global.clone();
        let mut distortion = self.distortion;
        for (d, gd) in distortion.iter_mut().zip(g.distortion) {
            *d = d.or(gd);
        }
        let frame_x = self.fl_x.is_some() || self.angle_x.is_some();
        let frame_y = self.fl_y.is_some() || self.angle_y.is_some();
        Self {
            fl_x: if frame_x { self.fl_x } else { g.fl_x },
            fl_y: if frame_y { self.fl_y } else { g.fl_y },
            angle_x: if frame_x { self.angle_x } else { g.angle_x },
            angle_y: if frame_y { self.angle_y } else { g.angle_y },
            cx: self.cx.or(g.cx),
            cy: self.cy.or(g.cy),
            w: self.w.or(g.w),
            h: self.h.or(g.h),
            distortion,
            unmodelled: self.unmodelled || g.unmodelled,
        }
    }

    /// Whether the file gives this frame's image size (`w` and `h`).
    pub fn gives_size(&self) -> bool {
        self.w.is_some() && self.h.is_some()
    }

    /// Checks the promised size against the decoded image's, then resolves the focal lengths.
    /// `json` and `frame` name where a missing focal length should have been.
    pub fn resolve(
        &self,
        json: &Path,
        frame: &str,
        image: &Path,
        width: u32,
        height: u32,
    ) -> Result<Intrinsics, DataError> {
        for (given, actual) in [(&self.w, width), (&self.h, height)] {
            if let Some(g) = given.as_ref().filter(|g| g.value != actual) {
                let (w, h) = (self.w.as_ref().map_or(width, |w| w.value), self.h.as_ref().map_or(height, |h| h.value));
                return Err(DataError::ImageSize {
                    file: image.to_path_buf(),
                    width,
                    height,
                    expected: format!("{}: {} is {} (so {w}x{h} expected)", json.display(), g.field, g.value),
                });
            }
        }
        let from_angle = |angle: f64, size: u32| 0.5 * f64::from(size) / (0.5 * angle).tan();
        let fx = self.fl_x.or_else(|| self.angle_x.map(|a| from_angle(a, width)));
        let fy = self.fl_y.or_else(|| self.angle_y.map(|a| from_angle(a, height)));
        let (fx, fy) = match (fx, fy) {
            (Some(fx), Some(fy)) => (fx, fy),
            (Some(f), None) | (None, Some(f)) => (f, f),
            (None, None) => {
                return Err(DataError::Field {
                    file: PathBuf::from(json),
                    field: format!("{frame}.fl_x"),
                    message: "missing: give fl_x or camera_angle_x, at the top level or per frame".into(),
                })
            }
        };
        let distortion = self.distortion.map(|d| d.unwrap_or(0.0) as f32);
        Ok(Intrinsics {
            fx: fx as f32,
            fy: fy as f32,
            cx: self.cx.unwrap_or(0.5 * f64::from(width)) as f32,
            cy: self.cy.unwrap_or(0.5 * f64::from(height)) as f32,
            distortion,
        })
    }
}
