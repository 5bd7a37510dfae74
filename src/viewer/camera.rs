//! The viewer's free camera: orbit about a target, pan, zoom and fly, in the scene cube's frame
//! (z up, the scene inside [-1, 1]^3), and a snap to any dataset view.

use crate::data::Camera;
use glam::Vec3;

/// Pitch stays short of straight up or down, where yaw has no meaning.
const MAX_PITCH: f32 = 1.55;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FreeCamera {
    /// The point orbited about.
    pub target: Vec3,
    /// Heading of the viewing direction about +z, radians.
    pub yaw: f32,
    /// Elevation of the viewing direction, radians (positive looks up).
    pub pitch: f32,
    /// From the camera to the target.
    pub distance: f32,
    /// Vertical field of view, radians.
    pub fov_y: f32,
    /// A dataset view snapped to: rendered with its exact pose and intrinsics until the camera moves.
    pub exact: Option<Camera>,
}

impl Default for FreeCamera {
    /// The whole cube from above and to the side.
    fn default() -> Self {
        Self {
            target: Vec3::ZERO,
            yaw: std::f32::consts::FRAC_PI_2,
            pitch: -0.5,
            distance: 3.6,
            fov_y: 40f32.to_radians(),
            exact: None,
        }
    }
}

impl FreeCamera {
    /// Unit viewing direction.
    pub fn forward(&self) -> Vec3 {
        let (sy, cy) = self.yaw.sin_cos();
        let (sp, cp) = self.pitch.sin_cos();
        Vec3::new(cp * cy, cp * sy, sp)
    }

    pub fn position(&self) -> Vec3 {
        match &self.exact {
            Some(camera) => Vec3::from(camera.position),
            None => self.target - self.forward() * self.distance,
        }
    }

    /// The camera's right and up axes (world frame).
    pub fn axes(&self) -> (Vec3, Vec3) {
        let forward = self.forward();
        let right = forward.cross(Vec3::Z).try_normalize().unwrap_or(Vec3::X);
        (right, right.cross(forward))
    }

    /// A pinhole camera of `width` x `height` pixels for the renderer. A snapped view keeps its
    /// intrinsics, scaled to the resolution.
    pub fn camera(&self, width: u32, height: u32) -> Camera {
        if let Some(view) = &self.exact {
            let (sx, sy) = (width as f32 / view.width as f32, height as f32 / view.height as f32);
            return Camera {
                width,
                height,
                fx: view.fx * sx,
                fy: view.fy * sy,
                cx: view.cx * sx,
                cy: view.cy * sy,
                ..*view
            };
        }
        let forward = self.forward();
        let (right, up) = self.axes();
        let back = -forward;
        let focal = 0.5 * height as f32 / (0.5 * self.fov_y).tan();
        Camera {
            // columns: the camera's x (right), y (up) and z (backwards) axes
            rotation: [[right.x, up.x, back.x], [right.y, up.y, back.y], [right.z, up.z, back.z]],
            position: self.position().to_array(),
            width,
            height,
            fx: focal,
            fy: focal,
            cx: 0.5 * width as f32,
            cy: 0.5 * height as f32,
            distortion: [0.0; 4],
        }
    }

    /// The free camera that looks as `view` does, orbiting the point of its optical axis nearest the
    /// scene's centre; it renders with `view`'s exact pose until moved.
    pub fn snap(view: &Camera) -> Self {
        let r = &view.rotation;
        let forward = -Vec3::new(r[0][2], r[1][2], r[2][2]).normalize();
        let position = Vec3::from(view.position);
        let distance = (-position.dot(forward)).max(0.1);
        Self {
            target: position + forward * distance,
            yaw: forward.y.atan2(forward.x),
            pitch: forward.z.clamp(-1.0, 1.0).asin().clamp(-MAX_PITCH, MAX_PITCH),
            distance,
            fov_y: 2.0 * (0.5 * view.height as f32 / view.fy).atan(),
            exact: Some(*view),
        }
    }

    /// Turns about the target by a mouse drag of (dx, dy) pixels.
    pub fn orbit(&mut self, dx: f32, dy: f32) {
        self.exact = None;
        self.yaw -= dx * 0.008;
        self.pitch = (self.pitch + dy * 0.008).clamp(-MAX_PITCH, MAX_PITCH);
    }

    /// Moves camera and target sideways by a drag of (dx, dy) pixels (the scene follows the mouse).
    pub fn pan(&mut self, dx: f32, dy: f32) {
        self.exact = None;
        let (right, up) = self.axes();
        self.target += (-right * dx + up * dy) * self.distance * 0.0015;
    }

    /// Moves towards the target (scroll > 0) or away; never through it.
    pub fn zoom(&mut self, scroll: f32) {
        self.exact = None;
        self.distance = (self.distance * (-scroll * 0.002).exp()).clamp(0.01, 50.0);
    }

    /// Flies camera and target along the camera's axes: `step` is (right, up, forward) in units of
    /// the orbit distance.
    pub fn fly(&mut self, step: Vec3) {
        self.exact = None;
        let (right, up) = self.axes();
        self.target += (right * step.x + up * step.y + self.forward() * step.z) * self.distance;
    }

    /// Where world point `p` lands in a `width` x `height` image: pixel coordinates, or None behind
    /// the camera.
    pub fn project(&self, p: Vec3, width: u32, height: u32) -> Option<[f32; 2]> {
        let camera = self.camera(width, height);
        let r = &camera.rotation;
        let d = p - Vec3::from(camera.position);
        // camera frame: the rotation's columns are its axes
        let x = r[0][0] * d.x + r[1][0] * d.y + r[2][0] * d.z;
        let y = r[0][1] * d.x + r[1][1] * d.y + r[2][1] * d.z;
        let z = r[0][2] * d.x + r[1][2] * d.y + r[2][2] * d.z;
        (z < -1e-4).then(|| [camera.cx + camera.fx * x / -z, camera.cy - camera.fy * y / -z])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(c: &Camera) -> [Vec3; 3] {
        let r = &c.rotation;
        [0, 1, 2].map(|j| Vec3::new(r[0][j], r[1][j], r[2][j]))
    }

    #[test]
    fn the_camera_looks_at_its_target_with_an_orthonormal_upright_frame() {
        let mut free = FreeCamera::default();
        free.orbit(120.0, -40.0);
        let camera = free.camera(64, 48);
        let [x, y, z] = columns(&camera);
        for (a, b) in [(x, y), (y, z), (z, x)] {
            assert!(a.dot(b).abs() < 1e-5);
        }
        assert!((x.length() - 1.0).abs() < 1e-5 && (y.length() - 1.0).abs() < 1e-5);
        assert!(x.z.abs() < 1e-5, "no roll: the right axis is horizontal");
        assert!(y.z > 0.0, "up is up");
        let to_target = (free.target - Vec3::from(camera.position)).normalize();
        assert!((to_target + z).length() < 1e-5, "the camera looks along -z at its target");
        // the target projects to the image centre
        let p = free.project(free.target, 64, 48).expect("in front");
        assert!((p[0] - 32.0).abs() < 1e-3 && (p[1] - 24.0).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn a_snapped_view_renders_with_its_own_pose_and_keeps_its_direction_when_moved() {
        let mut free = FreeCamera { target: Vec3::new(0.2, -0.1, 0.3), yaw: 0.7, pitch: -0.4, ..Default::default() };
        let view = free.camera(80, 60);
        let snapped = FreeCamera::snap(&view);
        assert_eq!(snapped.camera(80, 60), view);
        let half = snapped.camera(40, 30);
        assert_eq!((half.fx, half.cx), (view.fx * 0.5, view.cx * 0.5));
        // moving by nothing leaves the exact pose but the same direction, position and focal length
        let mut moved = snapped;
        moved.orbit(0.0, 0.0);
        let again = moved.camera(80, 60);
        assert!((Vec3::from(again.position) - Vec3::from(view.position)).length() < 1e-4);
        assert!((columns(&again)[2] - columns(&view)[2]).length() < 1e-4);
        assert!((again.fy - view.fy).abs() < 1e-2);
        free.zoom(100.0);
        assert!(free.distance < 3.6);
    }

    #[test]
    fn points_behind_the_camera_do_not_project() {
        let free = FreeCamera::default();
        let behind = free.position() - free.forward();
        assert!(free.project(behind, 64, 48).is_none());
    }
}
