//! The multi-scale scene (`make-scene --multiscale`): it loads, its cameras span the promised range of
//! scales in both splits, the shipped config grows a deep octree on it, and its ground truth is exact.

use infnerf::config::Config;
use infnerf::data::{load_dataset, Camera, Dataset, LoadOptions};
use infnerf::octree::Octree;
use infnerf::scene_gen::{
    make_scene_with, ray_cast, SceneFormat, SceneKind, SceneOptions, MULTISCALE_FARTHEST, MULTISCALE_NEAREST,
};
mod common;

use common::TempDir;
use serde_json::Value;
use std::path::Path;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/multiscale.toml");

fn options() -> LoadOptions {
    LoadOptions { background: [1.0; 3], holdout_every: 8, scene_bound: 1.5, downscale: 1, memory_budget: None }
}

/// Renders the scene at `size` x `size` (odd: the centre pixel's ray is the optical axis) and loads it.
fn scene(name: &str, size: u32, train_views: u32, test_views: u32) -> (TempDir, Dataset) {
    let tmp = TempDir::new(name);
    let opts = SceneOptions { width: size, height: size, train_views, test_views, seed: 4 };
    make_scene_with(&tmp.0, &opts, SceneFormat::Blender, SceneKind::Multiscale).unwrap();
    let data = load_dataset(&tmp.0, &options()).unwrap();
    (tmp, data)
}

fn frames(dir: &Path, split: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join(format!("transforms_{split}.json"))).unwrap();
    let root: Value = serde_json::from_str(&text).unwrap();
    root["frames"].as_array().unwrap().clone()
}

fn vector(value: &Value) -> [f64; 3] {
    [0, 1, 2].map(|k| value[k].as_f64().unwrap())
}

fn world_position(camera: &Camera, data: &Dataset) -> [f64; 3] {
    [0, 1, 2].map(|k| f64::from(camera.position[k]) / f64::from(data.scale) + f64::from(data.centre[k]))
}

fn axis(camera: &Camera, k: usize) -> [f64; 3] {
    [0, 1, 2].map(|r| f64::from(camera.rotation[r][k]))
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[test]
fn cameras_span_sixteen_times_in_distance_in_both_splits_and_images_are_not_blank() {
    let (tmp, data) = scene("ms-load", 21, 10, 6);
    assert_eq!((data.train.len(), data.test.len()), (10, 6));
    const { assert!(MULTISCALE_FARTHEST / MULTISCALE_NEAREST >= 16.0) };
    for (split, views) in [("train", &data.train), ("test", &data.test)] {
        let frames = frames(&tmp.0, split);
        let distances: Vec<f64> = frames.iter().map(|f| f["camera_distance"].as_f64().unwrap()).collect();
        let (near, far) = distances.iter().fold((f64::MAX, 0.0f64), |(a, b), &d| (a.min(d), b.max(d)));
        assert!(far / near >= 16.0, "{split}: distances {distances:?}");
        assert!(near >= MULTISCALE_NEAREST - 1e-9 && far <= MULTISCALE_FARTHEST + 1e-9, "{split}: {distances:?}");
        for ((frame, view), distance) in frames.iter().zip(views.iter()).zip(&distances) {
            // The recorded distance is the camera's to the point it looks at, straight ahead.
            let c = world_position(&view.camera, &data);
            let look_at = vector(&frame["look_at"]);
            let to = [0, 1, 2].map(|k| look_at[k] - c[k]);
            let length = dot(to, to).sqrt();
            assert!((length - distance).abs() < 1e-4 * distance, "{}: {length} vs {distance}", view.name);
            assert!(-dot(to, axis(&view.camera, 2)) / length > 0.9999, "{} does not look at its point", view.name);
            // Not blank: some of the scene, and more than one colour.
            let rgb = &view.image.rgb;
            let mean = rgb.iter().sum::<f32>() / rgb.len() as f32;
            let spread = rgb.iter().map(|v| (v - mean).abs()).sum::<f32>() / rgb.len() as f32;
            assert!(spread > 0.01, "{}: flat image (mean {mean}, spread {spread})", view.name);
            assert!(rgb.chunks(3).any(|p| p.iter().any(|&v| v < 0.9)), "{} shows only background", view.name);
        }
    }
}

#[test]
fn instant_ngp_format_is_refused() {
    let tmp = TempDir::new("ms-ngp");
    let opts = SceneOptions { width: 8, height: 8, train_views: 2, test_views: 1, seed: 0 };
    let error = make_scene_with(&tmp.0, &opts, SceneFormat::Ngp, SceneKind::Multiscale).unwrap_err();
    assert!(error.to_string().contains("Blender format only"), "{error}");
}

#[test]
fn shipped_config_grows_the_octree_three_levels_deep() {
    let config = Config::load(Path::new(CONFIG)).unwrap();
    assert!(config.field.max_depth >= 3);
    let (_tmp, data) = scene("ms-tree", 33, 16, 2);
    let cameras: Vec<Camera> = data.train.iter().map(|v| v.camera).collect();
    let tree = Octree::build(&cameras, config.field.max_depth, config.field.finest_resolution);
    let counts = tree.depth_counts();
    assert_eq!(counts.len(), config.field.max_depth as usize + 1, "nodes per depth {counts:?}");
    assert!(counts.iter().all(|&n| n > 0), "nodes per depth {counts:?}");
    // The deepest level is partial: the tree refines where the close-ups look, not everywhere.
    let full = 8usize.pow(config.field.max_depth);
    assert!(*counts.last().unwrap() < full, "nodes per depth {counts:?}");
    // With the default field settings (finest resolution 128) the tree reaches depth 3 as well.
    let defaults = Config::default();
    let tree = Octree::build(&cameras, 3, defaults.field.finest_resolution);
    assert_eq!(tree.depth_counts().len(), 4, "default resolution: {:?}", tree.depth_counts());
}

#[test]
fn ground_truth_depth_and_normals_match_a_ray_cast() {
    let size = 25;
    let (tmp, data) = scene("ms-depth", size, 2, 5);
    let test_frames = frames(&tmp.0, "test");
    for (index, view) in data.test.iter().enumerate() {
        let depth = image::open(tmp.0.join(format!("depth/test/r_{index}.png"))).unwrap().into_luma16();
        let normal = image::open(tmp.0.join(format!("normal/test/r_{index}.png"))).unwrap().into_rgb8();
        let scale = test_frames[index]["depth_scale"].as_f64().unwrap();
        let camera = &view.camera;
        let origin = world_position(camera, &data);
        let (right, up, back) = (axis(camera, 0), axis(camera, 1), axis(camera, 2));
        // The centre pixel sees the recorded point, at the recorded distance.
        let centre = f64::from(depth.get_pixel(size / 2, size / 2).0[0]) * scale;
        let distance = test_frames[index]["camera_distance"].as_f64().unwrap();
        assert!((centre - distance).abs() < 2e-4, "{}: centre depth {centre}, camera distance {distance}", view.name);
        let mut hits = 0;
        for (i, j) in [(0, 0), (3, 20), (12, 12), (20, 5), (24, 24), (7, 9), (16, 18)] {
            let x = (f64::from(i) + 0.5 - f64::from(camera.cx)) / f64::from(camera.fx);
            let y = -(f64::from(j) + 0.5 - f64::from(camera.cy)) / f64::from(camera.fy);
            let dir = [0, 1, 2].map(|k| x * right[k] + y * up[k] - back[k]);
            let length = dot(dir, dir).sqrt();
            let dir = dir.map(|v| v / length);
            let stored = f64::from(depth.get_pixel(i, j).0[0]) * scale;
            let Some(hit) = ray_cast(SceneKind::Multiscale, origin, dir) else {
                assert_eq!(stored, 0.0, "{} ({i}, {j}): background has no depth", view.name);
                continue;
            };
            hits += 1;
            let z = hit.t * -dot(dir, back);
            assert!((stored - z).abs() < 2e-4, "{} ({i}, {j}): depth {stored}, ray cast {z}", view.name);
            let n = normal.get_pixel(i, j).0.map(|v| f64::from(v) / 255.0 * 2.0 - 1.0);
            for k in 0..3 {
                assert!(
                    (n[k] - hit.normal[k]).abs() < 0.01,
                    "{} ({i}, {j}): normal {n:?}, ray cast {:?}",
                    view.name,
                    hit.normal
                );
            }
        }
        assert!(hits > 0, "{}: no pixel of the spot check sees the scene", view.name);
    }
}
