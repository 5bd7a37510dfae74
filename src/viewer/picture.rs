//! What a render shows in each mode, as an egui image: colour, depth, normals (from the depth map),
//! opacity, the octree level of each pixel's dominant node, and the error against a ground truth.

use crate::data::{Camera, Image};
use crate::trainer::Rendered;
use eframe::egui::{Color32, ColorImage};
use glam::Vec3;

/// What the central view shows (keys 1-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Rgb,
    Depth,
    Normals,
    Opacity,
    Levels,
    Error,
}

impl Mode {
    pub const ALL: [Mode; 6] = [Mode::Rgb, Mode::Depth, Mode::Normals, Mode::Opacity, Mode::Levels, Mode::Error];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Rgb => "rgb",
            Mode::Depth => "depth",
            Mode::Normals => "normals",
            Mode::Opacity => "opacity",
            Mode::Levels => "octree levels",
            Mode::Error => "error",
        }
    }
}

/// Pixels that count as surface for depth and normals.
const OPAQUE: f32 = 0.5;
const EMPTY: Color32 = Color32::from_rgb(24, 24, 28);

/// One colour per octree level (root first); the legend uses the same.
pub const LEVEL_COLOURS: [Color32; 8] = [
    Color32::from_rgb(230, 80, 60),
    Color32::from_rgb(240, 170, 40),
    Color32::from_rgb(120, 200, 70),
    Color32::from_rgb(50, 170, 220),
    Color32::from_rgb(150, 100, 230),
    Color32::from_rgb(230, 90, 190),
    Color32::from_rgb(200, 200, 200),
    Color32::from_rgb(120, 120, 120),
];

pub fn level_colour(level: u32) -> Color32 {
    LEVEL_COLOURS[(level as usize).min(LEVEL_COLOURS.len() - 1)]
}

fn byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
}

fn rgb(c: [f32; 3]) -> Color32 {
    Color32::from_rgb(byte(c[0]), byte(c[1]), byte(c[2]))
}

/// A dark-blue, teal, yellow ramp for t in [0, 1] (near is bright).
pub fn ramp(t: f32) -> Color32 {
    const STOPS: [[f32; 3]; 5] =
        [[0.05, 0.03, 0.25], [0.15, 0.30, 0.60], [0.10, 0.60, 0.60], [0.55, 0.80, 0.30], [0.99, 0.90, 0.15]];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    rgb([0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * f))
}

/// The colour image of `mode`. `levels[node]` is each octree node's depth; `truth` is the ground
/// truth at the render's size (for the error mode; without it the error image is empty).
pub fn picture(mode: Mode, r: &Rendered, camera: &Camera, levels: &[u32], truth: Option<&Image>) -> ColorImage {
    let (w, h) = (r.rgb.width as usize, r.rgb.height as usize);
    let n = w * h;
    let pixels: Vec<Color32> = match mode {
        Mode::Rgb => return colour_image(&r.rgb),
        Mode::Opacity => r.opacity.iter().map(|&a| rgb([a; 3])).collect(),
        Mode::Depth => {
            let z = surface_depth(r);
            let opaque = || z.iter().filter_map(|d| *d);
            let near = opaque().fold(f32::INFINITY, f32::min);
            let far = opaque().fold(f32::NEG_INFINITY, f32::max);
            let span = (far - near).max(1e-6);
            z.iter().map(|d| d.map_or(EMPTY, |d| ramp(1.0 - (d - near) / span))).collect()
        }
        Mode::Normals => {
            normals(r, camera).into_iter().map(|n| n.map_or(EMPTY, |n| rgb((n * 0.5 + 0.5).to_array()))).collect()
        }
        Mode::Levels => (0..n)
            .map(|i| match pixel_level(r, levels, i) {
                Some(level) => {
                    let shade = 0.35 + 0.65 * r.opacity[i].clamp(0.0, 1.0);
                    let c = level_colour(level);
                    Color32::from_rgb(
                        (f32::from(c.r()) * shade) as u8,
                        (f32::from(c.g()) * shade) as u8,
                        (f32::from(c.b()) * shade) as u8,
                    )
                }
                None => EMPTY,
            })
            .collect(),
        Mode::Error => match truth.filter(|t| t.width as usize == w && t.height as usize == h) {
            Some(truth) => error_map(&r.rgb, truth).into_iter().map(|e| ramp(4.0 * e)).collect(),
            None => vec![EMPTY; n],
        },
    };
    ColorImage::new([w, h], pixels)
}

/// An image's colours as they are (a render's, or a ground truth's).
pub fn colour_image(image: &Image) -> ColorImage {
    let pixels = image.rgb.chunks_exact(3).map(|c| rgb([c[0], c[1], c[2]])).collect();
    ColorImage::new([image.width as usize, image.height as usize], pixels)
}

/// The octree level of pixel `i`'s dominant node (the sample of largest weight), if any.
pub fn pixel_level(r: &Rendered, levels: &[u32], i: usize) -> Option<u32> {
    let node = *r.node.get(i)?;
    (node >= 0.0).then(|| levels.get(node as usize).copied()).flatten()
}

/// Share of the pixels whose dominant node is at each level (index = level).
pub fn level_shares(r: &Rendered, levels: &[u32]) -> Vec<f64> {
    let mut counts = vec![0usize; levels.iter().max().map_or(0, |&d| d as usize + 1)];
    let n = r.node.len().max(1);
    for i in 0..r.node.len() {
        if let Some(level) = pixel_level(r, levels, i) {
            counts[level as usize] += 1;
        }
    }
    counts.into_iter().map(|c| c as f64 / n as f64).collect()
}

/// Mean absolute colour error per pixel.
pub fn error_map(render: &Image, truth: &Image) -> Vec<f32> {
    render
        .rgb
        .chunks_exact(3)
        .zip(truth.rgb.chunks_exact(3))
        .map(|(a, b)| (0..3).map(|c| (a[c] - b[c]).abs()).sum::<f32>() / 3.0)
        .collect()
}

/// Distance along the ray to the surface where the pixel is opaque (depth / opacity: the renderer's
/// depth is weighted by the opacity).
fn surface_depth(r: &Rendered) -> Vec<Option<f32>> {
    r.depth.iter().zip(&r.opacity).map(|(&d, &a)| (a >= OPAQUE).then(|| d / a)).collect()
}

/// The unit direction (world frame) of the ray through the centre of pixel (x, y), as rays.wgsl
/// makes it for an undistorted camera.
pub fn ray_direction(camera: &Camera, x: usize, y: usize) -> Vec3 {
    let m = &camera.rotation;
    let d = Vec3::new((x as f32 + 0.5 - camera.cx) / camera.fx, -(y as f32 + 0.5 - camera.cy) / camera.fy, -1.0);
    Vec3::new(
        m[0][0] * d.x + m[0][1] * d.y + m[0][2] * d.z,
        m[1][0] * d.x + m[1][1] * d.y + m[1][2] * d.z,
        m[2][0] * d.x + m[2][1] * d.y + m[2][2] * d.z,
    )
    .normalize()
}

/// World-frame unit normals from the depth map: the cross product of the surface's central
/// differences across and down the image, turned towards the camera. A cheap view of the geometry
/// that needs no second field pass.
pub fn normals(r: &Rendered, camera: &Camera) -> Vec<Option<Vec3>> {
    let (w, h) = (camera.width as usize, camera.height as usize);
    let z = surface_depth(r);
    let origin = Vec3::from(camera.position);
    let direction = |x: usize, y: usize| ray_direction(camera, x, y);
    let point = |x: usize, y: usize| z[y * w + x].map(|t| origin + direction(x, y) * t);
    let mut out = vec![None; w * h];
    for y in 0..h {
        for x in 0..w {
            let Some(centre) = point(x, y) else { continue };
            let across = |a: Option<Vec3>, b: Option<Vec3>| match (a, b) {
                (Some(a), Some(b)) => Some(b - a),
                (None, Some(b)) => Some(b - centre),
                (Some(a), None) => Some(centre - a),
                (None, None) => None,
            };
            let dx = across(x.checked_sub(1).and_then(|x| point(x, y)), (x + 1 < w).then(|| point(x + 1, y)).flatten());
            let dy = across(y.checked_sub(1).and_then(|y| point(x, y)), (y + 1 < h).then(|| point(x, y + 1)).flatten());
            if let (Some(dx), Some(dy)) = (dx, dy) {
                if let Some(n) = dx.cross(dy).try_normalize() {
                    out[y * w + x] = Some(if n.dot(direction(x, y)) > 0.0 { -n } else { n });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::camera::FreeCamera;

    /// A camera looking straight down -z at the plane z = 0 from height 2: every pixel opaque, its
    /// depth the distance along its ray to the plane.
    fn plane_render() -> (Rendered, Camera) {
        let free = FreeCamera { pitch: -std::f32::consts::FRAC_PI_2 + 1e-3, distance: 2.0, ..Default::default() };
        let camera = free.camera(16, 12);
        let origin = Vec3::from(camera.position);
        let (w, h) = (16usize, 12usize);
        let mut depth = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let d = ray_direction(&camera, x, y);
                depth.push(-origin.z / d.z);
            }
        }
        let rgb = Image { width: 16, height: 12, rgb: vec![0.5; w * h * 3], alpha: Vec::new() };
        let node = (0..w * h).map(|i| if i % 2 == 0 { 0.0 } else { 2.0 }).collect();
        (Rendered { rgb, depth, opacity: vec![1.0; w * h], node }, camera)
    }

    #[test]
    fn normals_of_a_plane_seen_from_above_point_up() {
        let (r, camera) = plane_render();
        let normals = normals(&r, &camera);
        assert!(normals.iter().all(|n| n.is_some_and(|n| (n - Vec3::Z).length() < 1e-2)), "{normals:?}");
    }

    #[test]
    fn levels_come_from_each_pixels_dominant_node() {
        let (mut r, camera) = plane_render();
        r.node[1] = -1.0;
        let levels = [0, 1, 1];
        assert_eq!(pixel_level(&r, &levels, 0), Some(0));
        assert_eq!(pixel_level(&r, &levels, 1), None);
        assert_eq!(pixel_level(&r, &levels, 3), Some(1));
        let shares = level_shares(&r, &levels);
        assert_eq!(shares.len(), 2);
        assert!((shares[0] - 0.5).abs() < 1e-9 && (shares[1] - 95.0 / 192.0).abs() < 1e-9, "{shares:?}");
        let image = picture(Mode::Levels, &r, &camera, &levels, None);
        assert_eq!(image.pixels[0], level_colour(0));
        assert_eq!(image.pixels[1], EMPTY);
    }

    #[test]
    fn the_error_image_needs_a_truth_of_the_same_size() {
        let (r, camera) = plane_render();
        let mut truth = r.rgb.clone();
        truth.rgb[0] = 0.75;
        let errors = error_map(&r.rgb, &truth);
        assert!((errors[0] - 0.25 / 3.0).abs() < 1e-6 && errors[1] == 0.0);
        let with = picture(Mode::Error, &r, &camera, &[], Some(&truth));
        assert_ne!(with.pixels[0], with.pixels[1]);
        let small = Image { width: 2, height: 2, rgb: vec![0.0; 12], alpha: Vec::new() };
        let without = picture(Mode::Error, &r, &camera, &[], Some(&small));
        assert!(without.pixels.iter().all(|&p| p == EMPTY));
    }
}
