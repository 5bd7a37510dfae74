//! Shared test fixtures: a GPU on whatever adapter is present (lavapipe in CI) and small datasets.

#![allow(dead_code)]

pub mod reference;
mod temp_dir;

#[allow(unused_imports)]
pub use temp_dir::TempDir;

use infnerf::config::Config;
use infnerf::data::{Camera, Dataset, Image, View};
use infnerf::field::SplitMix64;
use infnerf::gpu::{Gpu, GpuOptions};
use infnerf::trainer::Trainer;
use std::sync::Arc;

pub fn gpu() -> Arc<Gpu> {
    Arc::new(Gpu::new(&GpuOptions::default()).expect("a wgpu adapter (install mesa-vulkan-drivers)"))
}

/// An adapter taken for one without SHADER_F16: mixed precision falls back to f32.
pub fn gpu_without_f16() -> Arc<Gpu> {
    Arc::new(Gpu::new(&GpuOptions { without_f16: true, ..Default::default() }).expect("a wgpu adapter"))
}

pub fn gpu_cas() -> Arc<Gpu> {
    Arc::new(Gpu::new(&GpuOptions { force_cas_atomics: true, ..Default::default() }).expect("a wgpu adapter"))
}

/// A camera at `position` looking at the origin, +Y up where possible.
pub fn look_at(position: [f32; 3], size: u32, focal: f32) -> Camera {
    let p = glam::Vec3::from(position);
    let back = p.normalize();
    let up = if back.y.abs() > 0.99 { glam::Vec3::Z } else { glam::Vec3::Y };
    let right = up.cross(back).normalize();
    let cam_up = back.cross(right);
    let cols = [right, cam_up, back];
    let mut rotation = [[0.0; 3]; 3];
    for (j, c) in cols.iter().enumerate() {
        for i in 0..3 {
            rotation[i][j] = c[i];
        }
    }
    Camera {
        rotation,
        position,
        width: size,
        height: size,
        fx: focal,
        fy: focal,
        cx: size as f32 / 2.0,
        cy: size as f32 / 2.0,
        distortion: [0.0; 4],
    }
}

/// Views around the cube with random images: enough structure to exercise every pass.
pub fn random_dataset(views: usize, size: u32, seed: u64) -> Dataset {
    let mut rng = SplitMix64(seed);
    let make = |rng: &mut SplitMix64, i: usize| {
        let a = i as f32 * 2.4 + 0.3;
        let position = [2.2 * a.cos(), 0.8 + 0.3 * (i as f32).sin(), 2.2 * a.sin()];
        let rgb = (0..size * size * 3).map(|_| rng.next_f32()).collect();
        let alpha = (0..size * size).map(|i| if i % 3 == 0 { rng.next_f32() } else { 1.0 }).collect();
        let image = Image { width: size, height: size, rgb, alpha };
        View { name: format!("view{i}"), camera: look_at(position, size, size as f32 * 1.2), image }
    };
    let train = (0..views).map(|i| make(&mut rng, i)).collect();
    let test = (0..2).map(|i| make(&mut rng, i + views)).collect();
    Dataset { train, val: Vec::new(), test, centre: [0.0; 3], scale: 1.0, background: [1.0; 3] }
}

pub fn tiny_config() -> Config {
    Config::tiny()
}

/// Largest absolute difference, and the largest magnitude of the reference.
/// Turns on the terms on probes with weights (normal, density, seam consistency), each at full
/// weight from the first step (their schedule groups overridden to 1).
pub fn probe_terms_on(config: &mut Config, [normal, density, seam]: [f32; 3]) {
    config.loss.lambda_normal_consistency = normal;
    config.loss.lambda_density_consistency = density;
    config.loss.lambda_seam = seam;
    config.schedule.override_geometric = Some(1.0);
    config.schedule.override_regularization = Some(1.0);
    config.schedule.override_consistency = Some(1.0);
}

pub fn max_diff(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    (diff, scale)
}

/// Every page's f16 copy of the hash tables holds its nodes' table entries rounded to f16.
pub fn assert_tables_copy_params(t: &Trainer) {
    let params = t.read_params().unwrap();
    let (node_params, hash) = (t.layout.node_params as usize, t.layout.hash_params as usize);
    let mut checked = 0;
    for p in 0..t.model.paging.n_pages {
        let nodes = t.model.paging.nodes(p);
        let copy: Vec<u16> = t.gpu.read(&t.model.tables[p as usize], nodes.len() * hash).unwrap();
        for (k, node) in nodes.enumerate() {
            for j in 0..hash {
                let want = reference::round_f16(params[node as usize * node_params + j]);
                assert_eq!(reference::f16_to_f32(copy[k * hash + j]), want, "node {node}, entry {j}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, t.octree.nodes.len() * hash);
}
