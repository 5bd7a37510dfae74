//! Camera-to-world poses: reading `transform_matrix` and mapping it into the scene cube.

use super::json::Obj;
use super::DataError;

/// The top 3x4 of an OpenGL camera-to-world matrix, in world units.
pub(crate) type Pose = [[f64; 4]; 3];

/// Largest |R^T R - I| entry accepted: the files carry rigid poses printed with float noise.
const ORTHONORMAL_TOLERANCE: f64 = 1e-2;

/// Reads `key` of `obj` and checks that its rotation part is a proper rotation.
pub(crate) fn read_pose(obj: &Obj, key: &str) -> Result<Pose, DataError> {
    let m = obj.matrix3x4(key)?;
    let column = |c: usize| [m[0][c], m[1][c], m[2][c]];
    let mut worst: f64 = 0.0;
    for a in 0..3 {
        for b in 0..3 {
            let dot = dot(column(a), column(b));
            worst = worst.max((dot - if a == b { 1.0 } else { 0.0 }).abs());
        }
    }
    if worst > ORTHONORMAL_TOLERANCE {
        let message = format!("the rotation part is not orthonormal (R^T R differs from I by {worst:.3})");
        return Err(obj.error(obj.field(key), message));
    }
    if dot(cross(column(0), column(1)), column(2)) < 0.0 {
        return Err(obj.error(obj.field(key), "the rotation part is a reflection (determinant -1)"));
    }
    Ok(m)
}

pub(crate) fn position(pose: &Pose) -> [f64; 3] {
    [pose[0][3], pose[1][3], pose[2][3]]
}

/// The optical axis in world coordinates: OpenGL cameras look down their -Z.
pub(crate) fn forward(pose: &Pose) -> [f64; 3] {
    [-pose[0][2], -pose[1][2], -pose[2][2]]
}

/// Rotation (row-major, columns = camera axes) and cube-frame position: cube = (world - centre) * scale.
pub(crate) fn to_cube(pose: &Pose, centre: [f64; 3], scale: f64) -> ([[f32; 3]; 3], [f32; 3]) {
    let rotation = [0, 1, 2].map(|r| [0, 1, 2].map(|c| pose[r][c] as f32));
    let position = [0, 1, 2].map(|i| ((pose[i][3] - centre[i]) * scale) as f32);
    (rotation, position)
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}
