//! Posed images: the Blender synthetic and instant-ngp / nerfstudio formats, and the image pyramid.
//!
//! Every camera leaves this module already mapped into the scene cube [-1,1]^3 (SPEC §1), in the
//! OpenGL convention (the camera looks down -Z, +Y is up), so nothing downstream knows the format.

/// An RGB image, linear row-major, values in [0,1], composited on the background already.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` floats, row-major, RGB interleaved.
    pub rgb: Vec<f32>,
}

/// A pinhole camera with optional OpenCV radial-tangential distortion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Camera {
    /// Camera-to-world rotation (columns are the camera's x, y, z axes in the cube frame).
    pub rotation: [[f32; 3]; 3],
    /// Camera centre in the cube frame.
    pub position: [f32; 3],
    pub width: u32,
    pub height: u32,
    pub fx: f32,
    pub fy: f32,
    pub cx: f32,
    pub cy: f32,
    /// OpenCV k1, k2, p1, p2; all zero for an ideal pinhole.
    pub distortion: [f32; 4],
}

/// One posed photo.
#[derive(Clone, Debug)]
pub struct View {
    /// The image file it came from, for messages.
    pub name: String,
    pub camera: Camera,
    pub image: Image,
}

/// A loaded scene: its splits, in the cube frame.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Vec<View>,
    pub val: Vec<View>,
    pub test: Vec<View>,
    /// cube = (world - centre) * scale.
    pub centre: [f32; 3],
    pub scale: f32,
    pub background: [f32; 3],
}
