//! `infnerf eval --levels`: every tree cut at its pyramid scale, the depth agreement of adjacent cuts
//! and the finest cut's depth and normal errors against the generated scene's ground truth.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use infnerf::gpu::GpuOptions;
use infnerf::run::{eval_checkpoint, train, TrainRequest};
use infnerf::scene_gen::{make_scene, SceneOptions};
use std::path::Path;
use temp_dir::TempDir;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/tiny.toml");

/// Pixels with a surface in the ground-truth depth maps of the test views.
fn surface_pixels(scene: &Path, views: usize) -> usize {
    (0..views)
        .map(|i| {
            let depth = image::open(scene.join(format!("depth/test/r_{i}.png"))).unwrap().into_luma16();
            depth.as_raw().iter().filter(|&&v| v > 0).count()
        })
        .sum()
}

#[test]
fn levels_report_covers_every_cut_and_the_ground_truth_depth() {
    let tmp = TempDir::new("levels");
    let scene = tmp.0.join("scene");
    make_scene(&scene, &SceneOptions { width: 32, height: 32, train_views: 8, test_views: 3, seed: 3 }).unwrap();
    let out = tmp.0.join("run");
    let request = TrainRequest {
        data: Some(scene.clone()),
        config: Some(TINY.into()),
        out: out.clone(),
        steps: Some(150),
        ..Default::default()
    };
    train(&request).unwrap();
    let checkpoint = out.join("checkpoint.safetensors");
    let report = eval_checkpoint(&checkpoint, &scene, "test", None, None, true, &GpuOptions::default()).unwrap();
    let levels = report.levels.expect("--levels reports levels");
    let finest = levels.cuts.len() as u32 - 1;
    assert!(finest >= 1, "a tree of one level: {levels:?}");
    for (k, cut) in levels.cuts.iter().enumerate() {
        assert_eq!(cut.cut, k as u32);
        assert_eq!(cut.level, finest - cut.cut, "cut {k} is compared at its pyramid scale");
        assert!(cut.psnr.is_finite() && cut.psnr > 5.0, "cut {k}: {}", cut.psnr);
        match cut.depth_disagreement_with_finer {
            None => assert_eq!(cut.cut, finest),
            Some(d) => assert!(d.is_finite() && d >= 0.0 && cut.cut < finest, "cut {k}: {d}"),
        }
    }
    // the finest cut renders the full-resolution image: its PSNR is the evaluation's
    assert!((levels.cuts[finest as usize].psnr - report.psnr).abs() < 1e-9);
    let depth = levels.depth.expect("the generated scene has ground-truth depth");
    assert_eq!(depth.pixels + depth.not_opaque, surface_pixels(&scene, 3));
    assert!(depth.pixels > 0, "{depth:?}");
    assert!(depth.mean_abs_error.is_finite() && depth.mean_rel_error.is_finite());
    // the normals of the finest cut's depth map against the truth's, at the pixels compared for depth
    // that have a normal on both sides (a lone pixel has no neighbour to take differences with)
    let normals = levels.normals.expect("the generated scene has ground-truth normals");
    assert!(normals.pixels <= depth.pixels && 10 * normals.pixels >= 9 * depth.pixels, "{normals:?} {depth:?}");
    eprintln!("normal angle error after 150 steps: {normals:?}");
    assert!(normals.mean_angle_deg.is_finite() && normals.mean_angle_deg < 60.0, "{normals:?}");
    assert!((0.0..=1.0).contains(&normals.within_10_deg));

    // a depth file without its scale is refused, naming the frame and field
    let file = scene.join("transforms_test.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["frames"][1].as_object_mut().unwrap().remove("depth_scale");
    std::fs::write(&file, serde_json::to_string(&json).unwrap()).unwrap();
    let error = eval_checkpoint(&checkpoint, &scene, "test", None, None, true, &GpuOptions::default()).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("transforms_test.json") && message.contains("frames[1].depth_scale"), "{message}");
}
