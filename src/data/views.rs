//! Turning parsed frames and their decoded images into views in the cube frame.

use super::decode::Decoded;
use super::pose::to_cube;
use super::transforms::Frame;
use super::{Camera, DataError, View};
use std::path::Path;

/// Builds one split. An image must match the size its frame promises (`w`/`h`), or, when none is
/// promised, the first such image of the split, since global intrinsics hold for one size only.
/// Sizes are checked at the files' own size; the intrinsics then shrink with the images by `downscale`,
/// which is exact because pixel (i, j) covers [i, i+1) x [j, j+1).
pub(crate) fn assemble(
    json: &Path,
    frames: &[&Frame],
    images: Vec<Decoded>,
    downscale: u32,
    centre: [f64; 3],
    scale: f64,
) -> Result<Vec<View>, DataError> {
    let mut reference: Option<(&Frame, (u32, u32))> = None;
    let mut views = Vec::with_capacity(frames.len());
    for (frame, Decoded { image, full_size }) in frames.iter().zip(images) {
        let (full_width, full_height) = full_size;
        if !frame.intrinsics.gives_size() {
            match reference {
                Some((first, (width, height))) if (width, height) != full_size => {
                    return Err(DataError::ImageSize {
                        file: frame.image.clone(),
                        width: full_width,
                        height: full_height,
                        expected: format!("{} (the split's first image) is {width}x{height}", first.image.display()),
                    });
                }
                Some(_) => {}
                None => reference = Some((frame, full_size)),
            }
        }
        let k = frame.intrinsics.resolve(json, &frame.field, &frame.image, full_width, full_height)?;
        let (rotation, position) = to_cube(&frame.pose, centre, scale);
        let n = downscale.max(1) as f32;
        let camera = Camera {
            rotation,
            position,
            width: image.width,
            height: image.height,
            fx: k.fx / n,
            fy: k.fy / n,
            cx: k.cx / n,
            cy: k.cy / n,
            distortion: k.distortion,
        };
        views.push(View { name: frame.name.clone(), camera, image });
    }
    Ok(views)
}
