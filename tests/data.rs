//! Loading datasets: the synthetic scene, instant-ngp / nerfstudio files, bad input, the pyramid.

use infnerf::data::{load_dataset, pyramid, scale_camera, Camera, DataError, Dataset, Image, LoadOptions, View};
use infnerf::scene_gen::{default_scene_dir, make_scene, make_scene_as, SceneFormat, SceneOptions, CAMERA_ANGLE_X};
mod common;

use common::TempDir;
use serde_json::json;
use std::path::Path;

const BACKGROUND: [f32; 3] = [0.2, 0.4, 0.6];

fn options() -> LoadOptions {
    LoadOptions { background: BACKGROUND, holdout_every: 3, scene_bound: 1.5, downscale: 1, memory_budget: None }
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

fn write_png(path: &Path, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 128]));
    image.save(path).unwrap();
}

fn identity_pose(z: f64) -> serde_json::Value {
    json!([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, z], [0.0, 0.0, 0.0, 1.0]])
}

/// A Blender folder whose train split has one frame per size, each with an image of that size.
fn blender_with_sizes(dir: &Path, sizes: &[(u32, u32)]) {
    let frames: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| {
            write_png(&dir.join(format!("train/r_{i}.png")), w, h);
            json!({ "file_path": format!("./train/r_{i}"), "transform_matrix": identity_pose(4.0) })
        })
        .collect();
    let split = json!({ "camera_angle_x": 0.6911, "frames": frames });
    write_json(&dir.join("transforms_train.json"), &split);
    write_json(&dir.join("transforms_test.json"), &split);
}

fn error(dir: &Path) -> String {
    match load_dataset(dir, &options()) {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn length(v: [f32; 3]) -> f32 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

fn axis(camera: &Camera, k: usize) -> [f32; 3] {
    [camera.rotation[0][k], camera.rotation[1][k], camera.rotation[2][k]]
}

#[test]
fn synthetic_scene_loads_in_the_cube_frame_with_composited_background() {
    let tmp = TempDir::new("scene");
    let opts = SceneOptions { width: 40, height: 30, train_views: 6, test_views: 3, seed: 7 };
    make_scene(&tmp.0, &opts).unwrap();
    let data = load_dataset(&tmp.0, &options()).unwrap();
    assert_eq!((data.train.len(), data.val.len(), data.test.len()), (6, 3, 3));
    assert_eq!((data.scale, data.centre, data.background), (1.0 / 1.5, [0.0; 3], BACKGROUND));
    let fx = 0.5 * 40.0 / (0.5 * CAMERA_ANGLE_X as f32).tan();
    for view in data.train.iter().chain(&data.val).chain(&data.test) {
        let c = &view.camera;
        assert_eq!((c.width, c.height, view.image.width, view.image.height), (40, 30, 40, 30));
        assert_eq!(view.image.rgb.len(), 40 * 30 * 3);
        assert!((c.fx - fx).abs() < 1e-3 && (c.fy - fx).abs() < 1e-3, "fx {} fy {}", c.fx, c.fy);
        assert_eq!((c.cx, c.cy, c.distortion), (20.0, 15.0, [0.0; 4]));
        assert!((length(c.position) - 4.0 / 1.5).abs() < 1e-4, "{} at {:?}", view.name, c.position);
        // It looks at the origin: its -Z axis points from its position to the centre.
        let back = axis(c, 2);
        let cos = (0..3).map(|k| back[k] * c.position[k]).sum::<f32>() / length(c.position);
        assert!(cos > 0.9999, "{} looks away from the origin: {cos}", view.name);
        assert!(c.position[2] > 0.0, "{} is below the horizon", view.name);
        assert!(view.image.rgb.iter().all(|v| (0.0..=1.0).contains(v)));
        for kind in ["depth", "normal"] {
            let name = view.name.trim_end_matches(".png");
            assert!(tmp.0.join(format!("{kind}/{name}.png")).is_file(), "{kind} of {name}");
        }
    }
    // Alpha 0 becomes the background; partial alpha composites straight colour over it.
    let view = &data.train[0];
    let raw = image::open(tmp.0.join(&view.name)).unwrap().into_rgba8();
    let (mut background, mut edge, mut covered) = (0, 0, 0);
    for (x, y, pixel) in raw.enumerate_pixels() {
        let [r, g, b, a] = pixel.0.map(|v| f32::from(v) / 255.0);
        let i = 3 * (y * 40 + x) as usize;
        let expected = [r, g, b].iter().zip(BACKGROUND).map(|(c, bg)| c * a + bg * (1.0 - a)).collect::<Vec<_>>();
        assert!(view.image.rgb[i..i + 3].iter().zip(&expected).all(|(v, e)| (v - e).abs() < 1e-5));
        match pixel.0[3] {
            0 => background += 1,
            255 => covered += 1,
            _ => edge += 1,
        }
    }
    assert!(background > 0 && covered > 100 && edge > 0, "background {background}, covered {covered}, edge {edge}");
    // Ground-truth depth of the centre pixel: something between the near and far side of the scene.
    let depth = image::open(tmp.0.join("depth/train/r_0.png")).unwrap().into_luma16();
    let metres = f64::from(depth.get_pixel(20, 15).0[0]) * 1e-4;
    assert!((2.5..5.5).contains(&metres), "centre depth {metres}");
}

#[test]
fn ngp_scene_is_the_blender_scene_in_another_layout() {
    let (blender, ngp) = (TempDir::new("scene-blender"), TempDir::new("scene-ngp"));
    let opts = SceneOptions { width: 24, height: 18, train_views: 4, test_views: 3, seed: 11 };
    make_scene_as(&blender.0, &opts, SceneFormat::Blender).unwrap();
    make_scene_as(&ngp.0, &opts, SceneFormat::Ngp).unwrap();
    assert!(!ngp.0.join("transforms_train.json").exists());
    let a = load_dataset(&blender.0, &options()).unwrap();
    let b = load_dataset(&ngp.0, &options()).unwrap();
    let counts = |d: &Dataset| (d.train.len(), d.val.len(), d.test.len());
    assert_eq!((counts(&a), counts(&b)), ((4, 3, 3), (4, 3, 3)));
    // The split lists, not holdout_every, choose the splits: test is the generated test views.
    let names: Vec<_> = b.test.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["images/r_4.png", "images/r_5.png", "images/r_6.png"]);
    for (va, vb) in all_views(&a).zip(all_views(&b)) {
        assert_eq!(va.image, vb.image, "{} and {}", va.name, vb.name);
        let (ca, cb) = (&va.camera, &vb.camera);
        assert_eq!((cb.width, cb.height, cb.cx, cb.cy, cb.rotation), (ca.width, ca.height, ca.cx, ca.cy, ca.rotation));
        assert!((ca.fx - cb.fx).abs() < 1e-4 && (ca.fy - cb.fy).abs() < 1e-4, "{ca:?} {cb:?}");
        let name = vb.name.trim_start_matches("images/").trim_end_matches(".png");
        for kind in ["depth", "normal"] {
            assert!(ngp.0.join(format!("{kind}/{name}.png")).is_file(), "{kind} of {name}");
        }
    }
    // Each format normalises the cameras its own way: the geometry agrees up to one scale factor.
    let centres = |d: &Dataset| d.train.iter().chain(&d.test).map(|v| v.camera.position).collect::<Vec<_>>();
    let (pa, pb) = (centres(&a), centres(&b));
    let distance = |p: [f32; 3], q: [f32; 3]| length([p[0] - q[0], p[1] - q[1], p[2] - q[2]]);
    let ratio = distance(pb[0], pb[1]) / distance(pa[0], pa[1]);
    for i in 0..pa.len() {
        for j in i + 1..pa.len() {
            let r = distance(pb[i], pb[j]) / distance(pa[i], pa[j]);
            assert!((r - ratio).abs() < 1e-4 * ratio, "cameras {i}, {j}: ratio {r}, not {ratio}");
        }
    }
    // Blender maps radius 4 to 4 / 1.5; instant-ngp's cameras at mean distance 4 sit at radius 2.
    assert!((ratio - 0.75).abs() < 1e-3, "ratio {ratio}");
}

#[test]
fn ngp_per_frame_intrinsics_distortion_missing_frames_and_holdout() {
    let tmp = TempDir::new("ngp");
    let target = [1.0, 2.0, 3.0];
    let mut frames = Vec::new();
    for i in 0..9 {
        // A ring of cameras at two heights, all looking at `target`.
        let a = f64::from(i) * std::f64::consts::TAU / 9.0;
        let back = [a.cos() * 0.9, a.sin() * 0.9, if i % 2 == 0 { 0.3 } else { 0.5 }];
        let len = (back[0] * back[0] + back[1] * back[1] + back[2] * back[2]).sqrt();
        let back = back.map(|v| v / len);
        let right = [-back[1], back[0], 0.0].map(|v| v / (back[0] * back[0] + back[1] * back[1]).sqrt());
        let up = [
            back[1] * right[2] - back[2] * right[1],
            back[2] * right[0] - back[0] * right[2],
            back[0] * right[1] - back[1] * right[0],
        ];
        let p: Vec<f64> = (0..3).map(|k| target[k] + 3.0 * back[k]).collect();
        let matrix: Vec<Vec<f64>> =
            (0..3).map(|r| vec![right[r], up[r], back[r], p[r]]).chain([vec![0.0, 0.0, 0.0, 1.0]]).collect();
        let file = format!("images/frame_{i:03}.png");
        if i != 4 {
            write_png(&tmp.0.join(&file), 8, 6);
        }
        let mut frame = json!({
            "file_path": file, "transform_matrix": matrix,
            "fl_x": 10.0 + f64::from(i), "fl_y": 11.0, "cx": 3.5, "w": 8, "h": 6,
        });
        if i == 5 {
            frame["k1"] = json!(-0.25);
        }
        frames.push(frame);
    }
    write_json(
        &tmp.0.join("transforms.json"),
        &json!({ "k1": 0.1, "k2": 0.01, "p1": 0.001, "p2": -0.002, "aabb_scale": 2, "frames": frames }),
    );
    let data = load_dataset(&tmp.0, &options()).unwrap();
    // Frames 0..9 without 4; every third (0, 3, 6) held out.
    let names = |views: &[View]| views.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&data.test), ["images/frame_000.png", "images/frame_003.png", "images/frame_006.png"]);
    assert_eq!(data.train.len(), 5);
    assert!(data.val.is_empty());
    for (c, t) in data.centre.into_iter().zip(target) {
        assert!((f64::from(c) - t).abs() < 1e-4, "centre {:?}", data.centre);
    }
    // Cameras 3 from the centre, aabb_scale 2: half-extent 0.5 * 3 * 2 = 3.
    assert!((data.scale - 1.0 / 3.0).abs() < 1e-5, "scale {}", data.scale);
    for view in data.train.iter().chain(&data.test) {
        assert!((length(view.camera.position) - 1.0).abs() < 1e-4);
    }
    let frame5 = data.train.iter().find(|v| v.name.ends_with("frame_005.png")).unwrap().camera;
    assert_eq!((frame5.fx, frame5.fy, frame5.cx, frame5.cy), (15.0, 11.0, 3.5, 3.0));
    assert_eq!(frame5.distortion, [-0.25, 0.01, 0.001, -0.002]);
    assert_eq!(data.train[0].camera.distortion, [0.1, 0.01, 0.001, -0.002]);
}

#[test]
fn ngp_angles_give_focal_lengths_and_all_missing_is_an_error() {
    let tmp = TempDir::new("ngp-angles");
    write_png(&tmp.0.join("a.png"), 8, 6);
    let frames = json!([{ "file_path": "a.png", "transform_matrix": identity_pose(1.0) },
                        { "file_path": "b.png", "transform_matrix": identity_pose(2.0) }]);
    write_json(&tmp.0.join("transforms.json"), &json!({ "camera_angle_x": 1.0, "frames": frames }));
    let data = load_dataset(&tmp.0, &LoadOptions { holdout_every: 0, ..options() }).unwrap();
    let c = data.train[0].camera;
    assert!((c.fx - 4.0 / 0.5f32.tan()).abs() < 1e-4 && c.fy == c.fx && (c.cx, c.cy) == (4.0, 3.0));

    std::fs::remove_file(tmp.0.join("a.png")).unwrap();
    let message = error(&tmp.0);
    assert!(message.contains("transforms.json") && message.contains("a.png, b.png"), "{message}");
}

#[test]
fn nerfstudio_split_lists_choose_the_splits() {
    let tmp = TempDir::new("ngp-lists");
    let mut frames = Vec::new();
    for i in 0..4 {
        write_png(&tmp.0.join(format!("images/{i}.png")), 8, 6);
        frames
            .push(json!({ "file_path": format!("./images/{i}.png"), "transform_matrix": identity_pose(f64::from(i)) }));
    }
    let lists = json!({
        "fl_x": 5.0, "frames": frames,
        "train_filenames": ["images/0.png", "images/2.png", "images/3.png"], "val_filenames": ["./images/1.png"],
    });
    write_json(&tmp.0.join("transforms.json"), &lists);
    let data = load_dataset(&tmp.0, &options()).unwrap();
    let names = |views: &[View]| views.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&data.train), ["images/0.png", "images/2.png", "images/3.png"]);
    assert_eq!(names(&data.val), ["images/1.png"]);
    assert!(data.test.is_empty());
}

#[test]
fn malformed_json_names_the_file_and_line() {
    let tmp = TempDir::new("malformed");
    std::fs::write(tmp.0.join("transforms_train.json"), "{\n  \"camera_angle_x\": 0.69,\n  \"frames\": [,]\n}")
        .unwrap();
    let message = error(&tmp.0);
    assert!(message.contains("transforms_train.json") && message.contains("line 3"), "{message}");
}

#[test]
fn nan_in_a_pose_names_the_field() {
    let tmp = TempDir::new("nan");
    blender_with_sizes(&tmp.0, &[(8, 8)]);
    let text = std::fs::read_to_string(tmp.0.join("transforms_train.json")).unwrap().replacen("4.0", "NaN", 1);
    std::fs::write(tmp.0.join("transforms_train.json"), text).unwrap();
    let message = error(&tmp.0);
    assert!(message.contains("transforms_train.json: frames[0].transform_matrix: contains NaN"), "{message}");
}

#[test]
fn bad_fields_are_named() {
    let tmp = TempDir::new("fields");
    blender_with_sizes(&tmp.0, &[(8, 8)]);
    let path = tmp.0.join("transforms_train.json");
    let good: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 7] = [
        (|v| v["camera_angle_x"] = json!(-1.0), "camera_angle_x: must be an angle"),
        (|v| v["fl_x"] = json!(0), "fl_x: must be positive"),
        (|v| v["frames"][0]["h"] = json!(6.5), "frames[0].h: must be a positive whole number"),
        (|v| _ = v.as_object_mut().unwrap().remove("camera_angle_x"), "frames[0].fl_x: missing"),
        (|v| _ = v["frames"][0].as_object_mut().unwrap().remove("file_path"), "frames[0].file_path: missing"),
        (|v| v["frames"][0]["transform_matrix"][0][0] = json!("x"), "frames[0].transform_matrix: must be a number"),
        (|v| v["frames"][0]["transform_matrix"][0][0] = json!(2.0), "frames[0].transform_matrix: the rotation part"),
    ];
    for (edit, expected) in cases {
        let mut bad = good.clone();
        edit(&mut bad);
        write_json(&path, &bad);
        let message = error(&tmp.0);
        assert!(message.contains("transforms_train.json") && message.contains(expected), "{message}");
    }
}

#[test]
fn missing_blender_image_names_the_file_and_field() {
    let tmp = TempDir::new("missing");
    blender_with_sizes(&tmp.0, &[(8, 8), (8, 8)]);
    std::fs::remove_file(tmp.0.join("train/r_1.png")).unwrap();
    let message = error(&tmp.0);
    assert!(message.contains("frames[1].file_path") && message.contains("r_1.png"), "{message}");
}

#[test]
fn wrong_image_size_names_the_file_and_sizes() {
    let tmp = TempDir::new("size");
    blender_with_sizes(&tmp.0, &[(8, 8), (8, 6)]);
    let message = error(&tmp.0);
    assert!(message.contains("r_1.png") && message.contains("8x6") && message.contains("8x8"), "{message}");

    let tmp = TempDir::new("size-wh");
    write_png(&tmp.0.join("a.png"), 8, 6);
    let frames = json!([{ "file_path": "a.png", "transform_matrix": identity_pose(1.0) }]);
    write_json(&tmp.0.join("transforms.json"), &json!({ "fl_x": 5, "w": 8, "h": 7, "frames": frames }));
    let message = load_dataset(&tmp.0, &LoadOptions { holdout_every: 0, ..options() }).unwrap_err().to_string();
    assert!(message.contains("a.png: image is 8x6") && message.contains("h is 7 (so 8x7 expected)"), "{message}");
}

#[test]
fn corrupt_image_and_no_dataset_are_errors() {
    let tmp = TempDir::new("corrupt");
    let message = error(&tmp.0);
    assert!(message.contains("transforms_train.json") && message.contains("transforms.json"), "{message}");
    blender_with_sizes(&tmp.0, &[(8, 8)]);
    std::fs::write(tmp.0.join("train/r_0.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let message = error(&tmp.0);
    assert!(message.contains("r_0.png: cannot decode image"), "{message}");
    assert!(matches!(load_dataset(&tmp.0.join("nope"), &options()), Err(DataError::Read { .. })));
}

/// Every view of every split, in order.
fn all_views(data: &Dataset) -> impl Iterator<Item = &View> {
    data.train.iter().chain(&data.val).chain(&data.test)
}

/// The mean of each n x n block of a `channels`-interleaved image, cropping the remainder.
fn block_means(values: &[f32], width: u32, height: u32, channels: usize, n: u32) -> Vec<f64> {
    let (w, h, n) = (width as usize, height as usize, n as usize);
    let mut out = Vec::new();
    if values.is_empty() {
        return out;
    }
    for y in 0..h / n {
        for x in 0..w / n {
            for c in 0..channels {
                let block = (0..n * n).map(|k| values[((y * n + k / n) * w + x * n + k % n) * channels + c]);
                out.push(block.map(f64::from).sum::<f64>() / (n * n) as f64);
            }
        }
    }
    out
}

/// `shrunk` is `full` loaded at 1/n size: sizes floor, intrinsics divide, pixels are block means.
/// (An image whose only transparent pixels were cropped away may drop its alpha; none here does.)
fn assert_downscaled(full: &Dataset, shrunk: &Dataset, n: u32) {
    assert_eq!(all_views(full).count(), all_views(shrunk).count());
    for (a, b) in all_views(full).zip(all_views(shrunk)) {
        let (ca, cb) = (&a.camera, &b.camera);
        assert_eq!(b.name, a.name);
        assert_eq!((cb.width, cb.height), (ca.width / n, ca.height / n), "{}", b.name);
        assert_eq!((b.image.width, b.image.height), (cb.width, cb.height));
        let n_f = n as f32;
        assert_eq!((cb.fx, cb.fy, cb.cx, cb.cy), (ca.fx / n_f, ca.fy / n_f, ca.cx / n_f, ca.cy / n_f));
        assert_eq!((cb.rotation, cb.position, cb.distortion), (ca.rotation, ca.position, ca.distortion));
        let (w, h) = (a.image.width, a.image.height);
        for (got, want) in [
            (&b.image.rgb, block_means(&a.image.rgb, w, h, 3, n)),
            (&b.image.alpha, block_means(&a.image.alpha, w, h, 1, n)),
        ] {
            assert_eq!(got.len(), want.len(), "{}", b.name);
            for (g, e) in got.iter().zip(&want) {
                assert!((f64::from(*g) - e).abs() < 1e-6, "{}: {g} where the block mean is {e}", b.name);
            }
        }
    }
}

#[test]
fn downscale_averages_blocks_and_divides_intrinsics() {
    let tmp = TempDir::new("downscale");
    // Odd sizes: the remainder rows and columns are cropped.
    let opts = SceneOptions { width: 41, height: 31, train_views: 3, test_views: 2, seed: 5 };
    make_scene(&tmp.0, &opts).unwrap();
    let full = load_dataset(&tmp.0, &options()).unwrap();
    assert!(all_views(&full).all(|v| v.image.alpha.len() == 41 * 31), "the scene has transparent pixels");
    for n in [2, 3] {
        let shrunk = load_dataset(&tmp.0, &LoadOptions { downscale: n, ..options() }).unwrap();
        assert_downscaled(&full, &shrunk, n);
    }
}

#[test]
fn downscale_checks_promised_sizes_at_full_size() {
    let tmp = TempDir::new("downscale-ngp");
    for i in 0..3 {
        write_png(&tmp.0.join(format!("images/{i}.png")), 9, 6);
    }
    let frames: Vec<_> = (0..3)
        .map(|i| json!({ "file_path": format!("images/{i}.png"), "transform_matrix": identity_pose(f64::from(i)) }))
        .collect();
    let file = json!({ "fl_x": 10.0, "fl_y": 11.0, "cx": 4.5, "w": 9, "h": 6, "k1": 0.1, "frames": frames });
    write_json(&tmp.0.join("transforms.json"), &file);
    let full = load_dataset(&tmp.0, &options()).unwrap();
    let shrunk = load_dataset(&tmp.0, &LoadOptions { downscale: 2, ..options() }).unwrap();
    assert_downscaled(&full, &shrunk, 2);
    let c = shrunk.train[0].camera;
    assert_eq!((c.width, c.height, c.fx, c.fy, c.cx, c.cy, c.distortion[0]), (4, 3, 5.0, 5.5, 2.25, 1.5, 0.1));
    // Opaque photos stay without alpha.
    assert!(all_views(&shrunk).all(|v| v.image.alpha.is_empty()));
}

#[test]
fn automatic_downscale_takes_the_smallest_power_of_two_that_fits() {
    let tmp = TempDir::new("downscale-auto");
    let opts = SceneOptions { width: 40, height: 32, train_views: 3, test_views: 2, seed: 5 };
    make_scene(&tmp.0, &opts).unwrap();
    // 7 images (val repeats the 2 test views), 64/3 bytes per pixel: 1/4 size is 7 * 10 * 8 * 64/3 = 11947
    // bytes, 1/2 size four times that.
    let auto = |budget| LoadOptions { downscale: 0, memory_budget: Some(budget), ..options() };
    let full = load_dataset(&tmp.0, &options()).unwrap();
    assert_downscaled(&full, &load_dataset(&tmp.0, &auto(12_000)).unwrap(), 4);
    assert_downscaled(&full, &load_dataset(&tmp.0, &auto(11_946)).unwrap(), 8);
    assert_downscaled(&full, &load_dataset(&tmp.0, &auto(u64::MAX)).unwrap(), 1);
    // Never below 1 pixel across: at 1/32 the 40x32 images still take 7 * 21.3 bytes.
    let message = load_dataset(&tmp.0, &auto(100)).unwrap_err().to_string();
    assert!(message.contains("downscale") && message.contains("automatic") && message.contains("1/32"), "{message}");
    // The real budget (half of MemAvailable) holds this tiny scene at full size.
    let real = load_dataset(&tmp.0, &LoadOptions { downscale: 0, ..options() }).unwrap();
    assert_downscaled(&full, &real, 1);
}

#[test]
fn bad_downscale_values_are_errors() {
    let tmp = TempDir::new("downscale-bad");
    blender_with_sizes(&tmp.0, &[(8, 8), (8, 8)]);
    let error = |n| load_dataset(&tmp.0, &LoadOptions { downscale: n, ..options() }).unwrap_err().to_string();
    let message = error(65);
    assert!(message.contains("downscale") && message.contains("at most 64"), "{message}");
    // 8 / 16 rounds to 0 pixels: the error names the image.
    let message = error(16);
    assert!(message.contains("r_0.png: image is 8x8") && message.contains("less than 1x1"), "{message}");
    assert!(message.contains("data.downscale = 16"), "{message}");
    assert!(load_dataset(&tmp.0, &LoadOptions { downscale: 8, ..options() }).is_ok());
}

#[test]
fn pyramid_halves_with_floor_and_box_averages() {
    let rgb = (0..5 * 3 * 3).map(|i| i as f32).collect();
    let image = Image { width: 5, height: 3, rgb, alpha: Vec::new() };
    let levels = pyramid(&image, 5);
    let sizes: Vec<_> = levels.iter().map(|l| (l.width, l.height)).collect();
    assert_eq!(sizes, [(5, 3), (2, 1)]);
    assert_eq!(levels[0], image);
    // Pixel (x, y) channel c of level 0 is 3 * (5y + x) + c; level 1 pixel 1 averages x 2..4, y 0..2.
    let average = |x: usize, c: usize| {
        [(2 * x, 0), (2 * x + 1, 0), (2 * x, 1), (2 * x + 1, 1)]
            .iter()
            .map(|&(x, y)| (3 * (5 * y + x) + c) as f32)
            .sum::<f32>()
            / 4.0
    };
    assert_eq!(
        levels[1].rgb,
        [average(0, 0), average(0, 1), average(0, 2), average(1, 0), average(1, 1), average(1, 2)]
    );
    assert_eq!(pyramid(&image, 1).len(), 1);

    let camera = Camera {
        rotation: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        position: [0.0, 0.0, 2.0],
        width: 101,
        height: 50,
        fx: 80.0,
        fy: 60.0,
        cx: 50.5,
        cy: 25.0,
        distortion: [0.1, 0.0, 0.0, 0.0],
    };
    let c2 = scale_camera(&camera, 2);
    assert_eq!((c2.width, c2.height, c2.fx, c2.fy, c2.cx, c2.cy), (25, 12, 20.0, 15.0, 12.625, 6.25));
    assert_eq!((c2.rotation, c2.position, c2.distortion), (camera.rotation, camera.position, camera.distortion));
    assert_eq!(scale_camera(&camera, 0), camera);
}

#[test]
fn default_scene_loads() {
    let dir = default_scene_dir().unwrap();
    assert_eq!(default_scene_dir().unwrap(), dir);
    let data = load_dataset(&dir, &LoadOptions::default()).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (40, 10));
    assert!(data.train.iter().chain(&data.test).all(|v| (v.image.width, v.image.height) == (64, 64)));
}

#[test]
fn lego_200_loads_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/lego-200");
    if !dir.join("transforms_train.json").is_file() {
        println!("skipping: {} is absent", dir.display());
        return;
    }
    let data = load_dataset(&dir, &LoadOptions::default()).unwrap();
    assert_eq!((data.train.len(), data.val.len(), data.test.len()), (100, 100, 200));
    let c = data.train[0].camera;
    assert_eq!((c.width, c.height), (200, 200));
    assert!((c.fx - 277.8).abs() < 0.1, "fx {}", c.fx);
    // Background white: the lego's corner pixels are empty.
    assert_eq!(&data.train[0].image.rgb[..3], &[1.0, 1.0, 1.0]);
}

/// Rewrites assets/scene, the embedded default scene: `cargo test --test data -- --ignored`.
#[test]
#[ignore]
fn regenerate_default_scene() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/scene");
    let _ = std::fs::remove_dir_all(&dir);
    let opts = SceneOptions { width: 64, height: 64, train_views: 40, test_views: 10, seed: 0 };
    make_scene(&dir, &opts).unwrap();
}
