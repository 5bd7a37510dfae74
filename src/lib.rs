//! infnerf: octree level-of-detail neural radiance fields trained by WGSL compute kernels.

pub mod config;
pub mod data;
pub mod scene_gen;
