//! A synthetic scene rendered on the CPU by exact ray casting of an analytic scene, with ground-truth depth
//! and normals, in the Blender or the instant-ngp / nerfstudio format: the tests' data and the embedded
//! default scene.
//!
//! Blender layout ([`SceneFormat::Blender`], what [`make_scene`] writes):
//! - `transforms_{train,val,test}.json`: `camera_angle_x`, frames with `file_path` (no extension) and an
//!   OpenGL camera-to-world `transform_matrix`; val repeats the first few test frames (same files).
//! - `{train,test}/r_<i>.png`: RGBA, straight alpha = pixel coverage (3x3 supersampling), alpha 0 on
//!   the background.
//! - `depth/<split>/r_<i>.png`: 16-bit grey z-depth (distance along the optical axis) of the pixel centre
//!   in world units, value * `depth_scale` (per frame in the JSON) = depth; 0 on the background.
//! - `normal/<split>/r_<i>.png`: 8-bit RGB world-frame normal at the pixel centre as n * 0.5 + 0.5;
//!   black on the background.
//!
//! The multi-scale scene ([`SceneKind::Multiscale`], `make-scene --multiscale`) adds fine patterns and thin
//! structure and places the cameras from [`MULTISCALE_NEAREST`] to [`MULTISCALE_FARTHEST`] units from the
//! surface point at their image centre (log-spaced, train and test alike, mixed in file order); its
//! frames also carry `camera_distance` (that distance, world units) and `look_at` (that point). It is
//! written in the Blender format only.
//!
//! instant-ngp layout ([`SceneFormat::Ngp`]): the same cameras and pixels in one `transforms.json` with
//! global intrinsics (`fl_x fl_y cx cy w h`, `camera_angle_x`), `aabb_scale` 1, frames with `file_path`
//! `images/r_<i>.png` (train views first, then test views) and nerfstudio's `train_filenames` /
//! `val_filenames` / `test_filenames`, so the generated test views are the test split; depth and
//! normals as above in `depth/r_<i>.png` and `normal/r_<i>.png`.

mod embedded;
mod geometry;
mod multiscale;
mod texture;

pub use embedded::default_scene_dir;

use anyhow::Context;
use geometry::{cross, dot, normalize, scale, Scene, V3};
use serde_json::{json, Value};
use std::path::Path;

/// What [`make_scene`] renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SceneOptions {
    pub width: u32,
    pub height: u32,
    pub train_views: u32,
    pub test_views: u32,
    /// Camera placement is a pure function of the seed.
    pub seed: u64,
}

impl Default for SceneOptions {
    fn default() -> Self {
        Self { width: 100, height: 100, train_views: 60, test_views: 20, seed: 0 }
    }
}

/// Which analytic scene [`make_scene_with`] renders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SceneKind {
    /// Floor, sphere, box, cylinder and a gate, seen from 4 units away: the default scene.
    #[default]
    Standard,
    /// The same with fine patterns and thin structure, seen from 0.15 to 3 units away (see the module
    /// documentation): an octree several levels deep.
    Multiscale,
}

/// Nearest and farthest camera of the multi-scale scene: distance to the surface point at the image
/// centre, world units.
pub const MULTISCALE_NEAREST: f64 = multiscale::NEAREST;
pub const MULTISCALE_FARTHEST: f64 = multiscale::FARTHEST;

/// The file layout [`make_scene_as`] writes (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SceneFormat {
    /// `transforms_{train,val,test}.json`, as the NeRF synthetic scenes.
    #[default]
    Blender,
    /// One `transforms.json` as instant-ngp and nerfstudio write it.
    Ngp,
}

/// The NeRF synthetic scenes' horizontal field of view, radians.
pub const CAMERA_ANGLE_X: f64 = 0.6911112070083618;
/// Distance of every camera from the origin, world units.
pub const CAMERA_RADIUS: f64 = 4.0;
/// Metres (world units) per unit of the 16-bit depth images: 6.5 m of range at 0.1 mm steps.
pub const DEPTH_SCALE: f64 = 1e-4;
/// How many test views the val split repeats.
const VAL_VIEWS: u32 = 5;
/// Supersampling per pixel side: alpha is the covered fraction of SS x SS samples.
const SS: u32 = 3;
/// The sample at the pixel centre (SS is odd), whose hit gives the depth and normal maps.
const CENTRE_SAMPLE: u32 = SS * SS / 2;
const _: () = assert!(SS % 2 == 1, "with an even SS no sample lies at the pixel centre");

/// One camera: its pose rows (camera-to-world, top 3x4) and where its files go.
struct Shot {
    split: &'static str,
    pose: [[f64; 4]; 3],
    /// The colour image's path in the output folder, without `.png` (`train/r_3`, `images/r_63`).
    image: String,
    /// The depth and normal maps' paths, without `.png`.
    depth: String,
    normal: String,
    /// Distance to the surface point at the image centre, and that point (multi-scale scene only).
    aim: Option<(f64, V3)>,
}

/// Renders the scene into `out` (created if needed) in the Blender format described above.
pub fn make_scene(out: &Path, opts: &SceneOptions) -> anyhow::Result<()> {
    make_scene_as(out, opts, SceneFormat::Blender)
}

/// Renders the scene into `out` (created if needed) in `format`; the pixels do not depend on the format.
pub fn make_scene_as(out: &Path, opts: &SceneOptions, format: SceneFormat) -> anyhow::Result<()> {
    make_scene_with(out, opts, format, SceneKind::Standard)
}

/// Renders the scene `kind` into `out` (created if needed) in `format`.
pub fn make_scene_with(out: &Path, opts: &SceneOptions, format: SceneFormat, kind: SceneKind) -> anyhow::Result<()> {
    anyhow::ensure!(opts.width > 0 && opts.height > 0, "make_scene: width and height must be positive");
    anyhow::ensure!(opts.train_views > 0, "make_scene: train_views must be positive");
    // instant-ngp data is scaled by the mean camera distance, which the close-ups make too small to hold
    // the scene (half-extent 0.65 against content 1 unit from the middle).
    anyhow::ensure!(
        !(kind == SceneKind::Multiscale && format == SceneFormat::Ngp),
        "make_scene: the multi-scale scene is written in the Blender format only (its cameras are too close \
         for the instant-ngp format's normalisation)"
    );
    let scene = scene_of(kind);
    let mut shots = Vec::new();
    for (split, count, stream) in [("train", opts.train_views, 1), ("test", opts.test_views, 2)] {
        let mut rng = SplitMix64::new(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(stream));
        let placed: Vec<_> = match kind {
            SceneKind::Standard => (0..count).map(|_| (random_pose(&mut rng), None)).collect(),
            SceneKind::Multiscale => multiscale::place_cameras(&scene, count as usize, &mut rng)?
                .into_iter()
                .map(|p| (p.pose, Some((p.distance, p.look_at))))
                .collect(),
        };
        for (index, (pose, aim)) in placed.into_iter().enumerate() {
            // Blender numbers each split's files from 0; one images/ folder numbers them all.
            let (image, depth, normal) = match format {
                SceneFormat::Blender => (
                    format!("{split}/r_{index}"),
                    format!("depth/{split}/r_{index}"),
                    format!("normal/{split}/r_{index}"),
                ),
                SceneFormat::Ngp => {
                    let i = shots.len();
                    (format!("images/r_{i}"), format!("depth/r_{i}"), format!("normal/r_{i}"))
                }
            };
            shots.push(Shot { split, pose, image, depth, normal, aim });
        }
    }
    let mut dirs: Vec<_> = shots
        .iter()
        .flat_map(|s| [&s.image, &s.depth, &s.normal])
        .filter_map(|name| Path::new(name).parent())
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        std::fs::create_dir_all(out.join(dir))
            .with_context(|| format!("{}: cannot create", out.join(dir).display()))?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(shots.len().max(1));
    let chunk = shots.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = shots
            .chunks(chunk)
            .map(|chunk| scope.spawn(|| chunk.iter().try_for_each(|shot| render_shot(out, &scene, opts, shot))))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a render thread panicked"))))
    })?;
    match format {
        SceneFormat::Blender => write_blender(out, &shots),
        SceneFormat::Ngp => write_ngp(out, &shots, opts),
    }
}

fn scene_of(kind: SceneKind) -> Scene {
    match kind {
        SceneKind::Standard => Scene::standard(),
        SceneKind::Multiscale => multiscale::scene(),
    }
}

/// Where a ray meets a scene: distance along the unit ray and the outward unit normal (world frame).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RayHit {
    pub t: f64,
    pub normal: [f64; 3],
}

/// Casts the unit ray `dir` from `origin` (world frame) into the scene `kind`, as the renderer does for
/// a pixel centre: for tests that check the depth and normal maps.
pub fn ray_cast(kind: SceneKind, origin: [f64; 3], dir: [f64; 3]) -> Option<RayHit> {
    scene_of(kind).trace(origin, normalize(dir), 0.0).map(|s| RayHit { t: s.t, normal: s.normal })
}

/// The split's shots; val is the first few test shots.
fn split<'a>(shots: &'a [Shot], split: &'a str) -> impl Iterator<Item = &'a Shot> {
    let (source, take) = if split == "val" { ("test", VAL_VIEWS as usize) } else { (split, usize::MAX) };
    shots.iter().filter(move |s| s.split == source).take(take)
}

fn write_blender(out: &Path, shots: &[Shot]) -> anyhow::Result<()> {
    for name in ["train", "val", "test"] {
        let frames: Vec<Value> = split(shots, name).map(|shot| frame_json(shot, "")).collect();
        let root = json!({ "camera_angle_x": CAMERA_ANGLE_X, "frames": frames });
        write_json(&out.join(format!("transforms_{name}.json")), &root)?;
    }
    Ok(())
}

fn write_ngp(out: &Path, shots: &[Shot], opts: &SceneOptions) -> anyhow::Result<()> {
    let frames: Vec<Value> = shots.iter().map(|shot| frame_json(shot, ".png")).collect();
    let files = |name: &str| -> Vec<String> { split(shots, name).map(|s| format!("{}.png", s.image)).collect() };
    let (w, h) = (f64::from(opts.width), f64::from(opts.height));
    let root = json!({
        "camera_angle_x": CAMERA_ANGLE_X,
        "fl_x": focal_length(opts.width),
        "fl_y": focal_length(opts.width),
        "cx": 0.5 * w,
        "cy": 0.5 * h,
        "w": opts.width,
        "h": opts.height,
        "aabb_scale": 1,
        "frames": frames,
        "train_filenames": files("train"),
        "val_filenames": files("val"),
        "test_filenames": files("test"),
    });
    write_json(&out.join("transforms.json"), &root)
}

fn write_json(file: &Path, root: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(root)?;
    std::fs::write(file, text + "\n").with_context(|| format!("{}: cannot write", file.display()))
}

/// `image_suffix`: what follows the image's path in `file_path` (Blender's paths have no extension).
fn frame_json(shot: &Shot, image_suffix: &str) -> Value {
    let mut matrix: Vec<Vec<f64>> = shot.pose.iter().map(|row| row.to_vec()).collect();
    matrix.push(vec![0.0, 0.0, 0.0, 1.0]);
    let mut frame = json!({
        "file_path": format!("./{}{image_suffix}", shot.image),
        "transform_matrix": matrix,
        "depth_file_path": format!("./{}.png", shot.depth),
        "normal_file_path": format!("./{}.png", shot.normal),
        "depth_scale": DEPTH_SCALE,
    });
    if let Some((distance, look_at)) = shot.aim {
        frame["camera_distance"] = json!(distance);
        frame["look_at"] = json!(look_at);
    }
    frame
}

/// Pixels, from the horizontal field of view.
fn focal_length(width: u32) -> f64 {
    0.5 * f64::from(width) / (0.5 * CAMERA_ANGLE_X).tan()
}

/// A camera on the upper hemisphere (10 to 70 degrees of elevation) looking at the origin, +Z up.
fn random_pose(rng: &mut SplitMix64) -> [[f64; 4]; 3] {
    // Uniform over the band's area: z uniform, azimuth uniform.
    let z = 0.17 + (0.94 - 0.17) * rng.next_f64();
    let azimuth = std::f64::consts::TAU * rng.next_f64();
    let ring = (1.0 - z * z).sqrt();
    let back = [ring * azimuth.cos(), ring * azimuth.sin(), z];
    let right = normalize(cross([0.0, 0.0, 1.0], back));
    let up = cross(back, right);
    let p = scale(back, CAMERA_RADIUS);
    [0, 1, 2].map(|r| [right[r], up[r], back[r], p[r]])
}

fn render_shot(out: &Path, scene: &Scene, opts: &SceneOptions, shot: &Shot) -> anyhow::Result<()> {
    let (w, h) = (opts.width, opts.height);
    let focal = focal_length(w);
    let origin = [0, 1, 2].map(|r| shot.pose[r][3]);
    let axis = |c: usize| [0, 1, 2].map(|r| shot.pose[r][c]);
    let (right, up, back) = (axis(0), axis(1), axis(2));
    // Pixel (i, j) spans [i, i+1) x [j, j+1), rows going down; the principal point is the image centre.
    let ray = |u: f64, v: f64| {
        let (x, y) = ((u - 0.5 * f64::from(w)) / focal, -(v - 0.5 * f64::from(h)) / focal);
        normalize([0, 1, 2].map(|k| x * right[k] + y * up[k] - back[k]))
    };
    // The angle one supersample spans: fine patterns are filtered over its footprint.
    let spread = 1.0 / (focal * f64::from(SS));
    let pixels = (w * h) as usize;
    let (mut rgba, mut depth, mut normal) = (vec![0u8; pixels * 4], vec![0u16; pixels], vec![0u8; pixels * 3]);
    for j in 0..h {
        for i in 0..w {
            let p = (j * w + i) as usize;
            let (mut sum, mut hits, mut at_centre) = ([0.0; 3], 0, None);
            for s in 0..SS * SS {
                let u = f64::from(i) + (f64::from(s % SS) + 0.5) / f64::from(SS);
                let v = f64::from(j) + (f64::from(s / SS) + 0.5) / f64::from(SS);
                let sample = scene.trace(origin, ray(u, v), spread);
                if let Some(sample) = &sample {
                    sum = [0, 1, 2].map(|k| sum[k] + sample.rgb[k]);
                    hits += 1;
                }
                if s == CENTRE_SAMPLE {
                    at_centre = sample;
                }
            }
            if hits > 0 {
                for k in 0..3 {
                    rgba[4 * p + k] = to_u8(sum[k] / f64::from(hits));
                }
                rgba[4 * p + 3] = to_u8(f64::from(hits) / f64::from(SS * SS));
            }
            let centre = ray(f64::from(i) + 0.5, f64::from(j) + 0.5);
            if let Some(sample) = at_centre {
                let z = sample.t * -dot(centre, back);
                depth[p] = (z / DEPTH_SCALE).round().clamp(1.0, f64::from(u16::MAX)) as u16;
                for k in 0..3 {
                    normal[3 * p + k] = to_u8(sample.normal[k] * 0.5 + 0.5);
                }
            }
        }
    }
    save(out, &format!("{}.png", shot.image), image::RgbaImage::from_raw(w, h, rgba))?;
    save(out, &format!("{}.png", shot.depth), image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, depth))?;
    save(out, &format!("{}.png", shot.normal), image::RgbImage::from_raw(w, h, normal))
}

fn save<P>(out: &Path, name: &str, image: Option<image::ImageBuffer<P, Vec<P::Subpixel>>>) -> anyhow::Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let path = out.join(name);
    let image = image.context("internal: image buffer of the wrong size")?;
    image.save(&path).with_context(|| format!("{}: cannot write", path.display()))
}

fn to_u8(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A tiny deterministic generator (Steele et al.'s SplitMix64): enough for camera placement.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
