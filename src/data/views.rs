//! Turning parsed frames and their decoded images into views in the cube frame.

use super::pose::to_cube;
use super::transforms::Frame;
use super::{Camera, DataError, Image, View};
use std::path::Path;

/// Builds one split. An image must match the size its frame promises (`w`/`h`), or, when none is
/// promised, the first such image of the split, since global intrinsics hold for one size only.
pub(crate) fn assemble(
    json: &Path,
    frames: &[&Frame],
    images: Vec<Image>,
    centre: [f64; 3],
    scale: f64,
) -> Result<Vec<View>, DataError> {
    let mut reference: Option<(&Frame, u32, u32)> = None;
    let mut views = Vec::with_capacity(frames.len());
    for (frame, image) in frames.iter().zip(images) {
        if !frame.intrinsics.gives_size() {
            match reference {
                Some((first, width, height)) if (width, height) != (image.width, image.height) => {
                    return Err(DataError::ImageSize {
                        file: frame.image.clone(),
                        width: image.width,
                        height: image.height,
                        expected: format!("{} (the split's first image) is {width}x{height}", first.image.display()),
                    });
                }
                Some(_) => {}
                None => reference = Some((frame, image.width, image.height)),
            }
        }
        let k = frame.intrinsics.resolve(json, &frame.field, &frame.image, image.width, image.height)?;
        let (rotation, position) = to_cube(&frame.pose, centre, scale);
        let camera = Camera {
            rotation,
            position,
            width: image.width,
            height: image.height,
            fx: k.fx,
            fy: k.fy,
            cx: k.cx,
            cy: k.cy,
            distortion: k.distortion,
        };
        views.push(View { name: frame.name.clone(), camera, image });
    }
    Ok(views)
}
