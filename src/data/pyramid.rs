//! The image pyramid: level l is 1/2^l of full resolution, each level a 2x2 box average of the one above.

use super::{Camera, Image};

/// Levels 0..levels (at least level 0). An odd last row or column is dropped (sizes halve with floor);
/// the pyramid stops early where a side would become 0.
pub fn pyramid(image: &Image, levels: usize) -> Vec<Image> {
    let mut out = vec![image.clone()];
    while out.len() < levels {
        let Some(next) = out.last().and_then(downsample) else { break };
        out.push(next);
    }
    out
}

fn downsample(image: &Image) -> Option<Image> {
    let (width, height) = (image.width / 2, image.height / 2);
    if width == 0 || height == 0 {
        return None;
    }
    let stride = image.width as usize * 3;
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height as usize {
        let (top, bottom) = (&image.rgb[2 * y * stride..], &image.rgb[(2 * y + 1) * stride..]);
        for x in 0..width as usize {
            for c in 0..3 {
                let (left, right) = (6 * x + c, 6 * x + 3 + c);
                rgb.push(0.25 * (top[left] + top[right] + bottom[left] + bottom[right]));
            }
        }
    }
    let mut alpha = Vec::new();
    if !image.alpha.is_empty() {
        let w = image.width as usize;
        for y in 0..height as usize {
            for x in 0..width as usize {
                let at = |dx: usize, dy: usize| image.alpha[(2 * y + dy) * w + 2 * x + dx];
                alpha.push(0.25 * (at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)));
            }
        }
    }
    Some(Image { width, height, rgb, alpha })
}

/// The camera for pyramid level `level`: pixel coordinates scale by 1/2^l (pixel centres at i + 0.5 stay
/// consistent), sizes halve with floor as the images do, distortion (in normalised coordinates) is kept.
pub fn scale_camera(camera: &Camera, level: u32) -> Camera {
    let level = level.min(31);
    let s = 1.0 / (1u64 << level) as f32;
    Camera {
        width: camera.width >> level,
        height: camera.height >> level,
        fx: camera.fx * s,
        fy: camera.fy * s,
        cx: camera.cx * s,
        cy: camera.cy * s,
        ..*camera
    }
}
