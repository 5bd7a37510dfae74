//! Host mirrors of the records the kernels read and write (shaders/common.wgsl, rays.wgsl).

use bytemuck::{Pod, Zeroable};

/// Per-step uniforms shared by every pass.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Frame {
    pub n_rays: u32,
    pub samples_per_ray: u32,
    pub step: u32,
    pub seed: u32,
    pub cut: u32,
    pub training: u32,
    pub patch_size: u32,
    pub pyramid_levels: u32,
    pub background: [f32; 3],
    pub inv_count: f32,
    pub lr_hash: f32,
    pub lr_mlp: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub bias1: f32,
    pub bias2: f32,
    pub n_params: u32,
    pub max_density: f32,
    pub ray_offset: u32,
    pub view: u32,
    pub occ_resolution: u32,
    pub occ_threshold: f32,
    pub occ_decay: f32,
    /// 1 once the grid is trusted to skip empty space
    pub occ_skip: u32,
    pub random_background: u32,
    pub occ_phase: u32,
    /// nodes of the octree
    pub n_nodes: u32,
    /// chance that a training sample in an empty cell is evaluated anyway
    pub occ_explore: f32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct Ray {
    pub origin: [f32; 3],
    pub near: f32,
    pub dir: [f32; 3],
    pub far: f32,
    /// rgb target, then the ray's weight in the loss
    pub target_rgb: [f32; 4],
    pub pixel_radius: f32,
    pub pixel: u32,
    /// training background behind the ray, RGBA8
    pub background: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct Sample {
    pub pos: [f32; 3],
    pub node: u32,
    pub t: f32,
    pub delta: f32,
    pub ray: u32,
    /// place among the active samples of its node
    pub rank: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct RayResult {
    pub rgb: [f32; 3],
    pub opacity: f32,
    pub depth: f32,
    pub loss: f32,
    /// samples the field evaluated (not skipped as empty space)
    pub active: f32,
    pub _pad: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct GpuCamera {
    /// rows of the camera-to-cube matrix [R | position]
    pub rows: [[f32; 4]; 3],
    pub intrinsics: [f32; 4],
    pub distortion: [f32; 4],
    pub width: u32,
    pub height: u32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable, PartialEq)]
pub struct Patch {
    pub view: u32,
    pub level: u32,
    pub x0: u32,
    pub y0: u32,
}

impl From<&crate::data::Camera> for GpuCamera {
    fn from(c: &crate::data::Camera) -> Self {
        let r = c.rotation;
        let p = c.position;
        Self {
            rows: [
                [r[0][0], r[0][1], r[0][2], p[0]],
                [r[1][0], r[1][1], r[1][2], p[1]],
                [r[2][0], r[2][1], r[2][2], p[2]],
            ],
            intrinsics: [c.fx, c.fy, c.cx, c.cy],
            distortion: c.distortion,
            width: c.width,
            height: c.height,
            _pad: [0; 2],
        }
    }
}
