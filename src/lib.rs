//! infnerf: octree level-of-detail neural radiance fields trained by WGSL compute kernels.
//!
//! The pipeline, module by module: `data` (posed images) -> `octree` (level of detail) ->
//! `field` (per-node parameters) -> `gpu` + `shaders/` (the passes) -> `loss_weights` (what each
//! loss term counts at a step) -> `trainer` (a step) ->
//! `run` (train / eval; `levels`: per tree cut) and `bench`.

pub mod adversarial;
pub mod bench;
pub mod config;
pub mod data;
pub mod field;
pub mod gpu;
pub mod io;
pub mod kernels;
pub mod levels;
pub mod loss_weights;
pub mod lpips;
pub mod metrics;
pub mod octree;
pub mod run;
pub mod scene_gen;
pub mod session;
pub mod stability;
pub mod trainer;
pub mod viewer;
