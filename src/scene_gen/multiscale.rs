//! The multi-scale scene: the standard objects with fine patterns on every surface, thin structure
//! (a wire fence, a mast with guy wires, a harp of strings), and cameras from close-ups 0.15 units from
//! a surface to overviews 3 units away, so that the octree needs its deep levels (SPEC §1).
//!
//! Scales, in world units (the content spans about 2 units; the loader's cube is [-1.5, 1.5]^3):
//! coarse objects 0.2-0.7; checkers of period 0.2 (box) and 0.03 (floor); fine patterns of period
//! 0.012 (sphere), 0.01 (box), 0.008 and 0.016 (cylinder), 0.006 (floor, alternate 0.25 tiles), 0.004 (beads);
//! thin structure of radius 0.002-0.005 (4-10 mm thick against the 2-unit content).

use super::geometry::{add, cross, dot, normalize, rotate_z, scale, sub, Object, Paint, Scene, Shape, V3};
use super::texture::Detail;
use super::SplitMix64;

/// Camera distances to the surface point at the image centre span [NEAREST, FARTHEST], world units.
pub const NEAREST: f64 = 0.15;
pub const FARTHEST: f64 = 3.0;

/// Radius below which an object counts as thin structure (close-ups aim at these).
const THIN: f64 = 0.015;
/// Distance below which a camera may aim at thin structure instead of any surface.
const CLOSE: f64 = 0.6;
/// Share of the close cameras that aim at thin structure.
const THIN_SHARE: f64 = 0.4;
/// Smallest cosine between the line of sight and the surface normal at the aim point.
const MIN_COS: f64 = 0.2;
/// How far away the placement rays start: beyond the content plus the farthest camera.
const LAUNCH: f64 = 6.0;
/// 1 / golden ratio: successive views' distances interleave across the range.
const GOLDEN: f64 = 0.618_033_988_749_894_9;

/// A camera: its pose rows (camera-to-world, top 3x4), its distance to the surface point it looks at
/// (along the optical axis), and that point.
pub struct Placement {
    pub pose: [[f64; 4]; 3],
    pub distance: f64,
    pub look_at: V3,
}

pub fn scene() -> Scene {
    let mut objects = super::geometry::standard_objects();
    let diagonal = normalize([1.0, 1.0, 0.0]);
    let up = [0.0, 0.0, 1.0];
    // Indices as in `standard_objects`: floor, sphere, box, cylinder, the gate's two poles and bar.
    objects[0].details = vec![
        Detail::Checker { period: 0.03, contrast: 0.25 },
        Detail::TiledStripes { tile: 0.25, period: 0.006, across: diagonal, contrast: 0.3 },
    ];
    objects[1].details = vec![Detail::Stripes { period: 0.012, across: normalize([1.0, 0.0, 1.0]), contrast: 0.3 }];
    objects[2].details = vec![Detail::Checker { period: 0.01, contrast: 0.2 }];
    // Rings on the side, and stripes across them so that the caps are patterned too.
    objects[3].details = vec![
        Detail::Stripes { period: 0.008, across: up, contrast: 0.3 },
        Detail::Stripes { period: 0.016, across: [1.0, 0.0, 0.0], contrast: 0.2 },
    ];
    for pole in &mut objects[4..6] {
        pole.details = vec![Detail::Stripes { period: 0.02, across: up, contrast: 0.25 }];
    }
    let rod =
        |a: V3, b: V3, radius: f64, colour: V3| Object::new(Shape::Cylinder { a, b, radius }, Paint::Plain(colour));
    let (white, dark, steel) = ([0.9, 0.88, 0.82], [0.15, 0.15, 0.2], [0.7, 0.72, 0.8]);
    // A fence in front: posts 4 mm in radius, three wires of 2.5 mm, a striped bead on each post.
    let (fence_y, post_top) = (-0.88, -0.3);
    for i in 0..7 {
        let x = -0.9 + 0.3 * f64::from(i);
        objects.push(rod([x, fence_y, -0.7], [x, fence_y, post_top], 0.004, white));
        objects.push(
            Object::new(
                Shape::Sphere { centre: [x, fence_y, post_top + 0.012], radius: 0.012 },
                Paint::Plain([0.8, 0.25, 0.2]),
            )
            .with(Detail::Stripes { period: 0.004, across: up, contrast: 0.35 }),
        );
    }
    for z in [-0.6, -0.48, -0.36] {
        objects.push(rod([-0.9, fence_y, z], [0.9, fence_y, z], 0.0025, dark));
    }
    // A mast on the box with three crossbars and three guy wires to the box's top.
    let (mast, box_top, mast_top) = ([0.42, -0.3], -0.1, 0.6);
    objects.push(rod([mast[0], mast[1], box_top], [mast[0], mast[1], mast_top], 0.005, steel));
    for (k, (z, half)) in [(0.2, 0.12), (0.35, 0.09), (0.5, 0.06)].into_iter().enumerate() {
        let along = rotate_z([half, 0.0, 0.0], 0.4 + 1.1 * k as f64);
        let centre = [mast[0], mast[1], z];
        objects.push(rod(sub(centre, along), add(centre, along), 0.003, steel));
    }
    for angle in [0.3, 2.4, 4.5] {
        let anchor = add([mast[0], mast[1], box_top], rotate_z([0.2, 0.0, 0.0], angle));
        objects.push(rod([mast[0], mast[1], 0.55], anchor, 0.002, dark));
    }
    // A harp of strings inside the gate.
    for k in 1..10 {
        let y = 0.2 + 0.055 * f64::from(k);
        objects.push(rod([-0.7, y, -0.7], [-0.7, y, 0.53], 0.002, dark));
    }
    Scene { objects, light: normalize([0.4, 0.3, 0.85]) }
}

/// The thin objects' axes (a sphere's is its centre twice).
fn thin_axes(scene: &Scene) -> Vec<(usize, V3, V3)> {
    scene
        .objects
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o.shape {
            Shape::Cylinder { a, b, radius } if radius < THIN => Some((i, a, b)),
            Shape::Sphere { centre, radius } if radius < THIN => Some((i, centre, centre)),
            _ => None,
        })
        .collect()
}

/// The fraction of the log-distance range of each of `count` views: every value of i / (count - 1)
/// once (both ends included), in the order of frac(i / golden ratio), so any run of views mixes scales.
pub fn distance_fractions(count: usize) -> Vec<f64> {
    let key = |i: usize| (i as f64 * GOLDEN).fract();
    (0..count)
        .map(|i| {
            let rank = (0..count).filter(|&j| key(j) < key(i)).count();
            if count > 1 {
                rank as f64 / (count - 1) as f64
            } else {
                0.5
            }
        })
        .collect()
}

/// `count` cameras at log-spaced distances (see [`distance_fractions`]), each looking at a surface
/// point it sees unoccluded: overviews aim near the middle of the scene, close-ups anywhere, some at
/// thin structure. Looks along a ray cast from afar, so nothing lies between camera and point.
pub fn place_cameras(scene: &Scene, count: usize, rng: &mut SplitMix64) -> anyhow::Result<Vec<Placement>> {
    let thin = thin_axes(scene);
    distance_fractions(count)
        .into_iter()
        .map(|s| {
            let distance = NEAREST * (FARTHEST / NEAREST).powf(s);
            (0..10_000)
                .find_map(|_| try_place(scene, &thin, distance, s, rng))
                .ok_or_else(|| anyhow::anyhow!("make_scene: found no view at distance {distance}"))
        })
        .collect()
}

fn try_place(
    scene: &Scene,
    thin: &[(usize, V3, V3)],
    distance: f64,
    s: f64,
    rng: &mut SplitMix64,
) -> Option<Placement> {
    let aim_thin = distance < CLOSE && !thin.is_empty() && rng.next_f64() < THIN_SHARE;
    let target = if aim_thin {
        let (_, a, b) = thin[((rng.next_f64() * thin.len() as f64) as usize).min(thin.len() - 1)];
        add(a, scale(sub(b, a), rng.next_f64()))
    } else {
        // Overviews aim within the middle of the scene, close-ups anywhere on it.
        let reach = 0.95 * (1.0 - 0.6 * s);
        [reach * (2.0 * rng.next_f64() - 1.0), reach * (2.0 * rng.next_f64() - 1.0), -0.72 + 0.8 * rng.next_f64()]
    };
    // Seen from the upper hemisphere, 5 to 76 degrees of elevation.
    let z = 0.09 + (0.97 - 0.09) * rng.next_f64();
    let azimuth = std::f64::consts::TAU * rng.next_f64();
    let ring = (1.0 - z * z).sqrt();
    let back = [ring * azimuth.cos(), ring * azimuth.sin(), z];
    let launch = add(target, scale(back, LAUNCH));
    let hit = scene.trace(launch, scale(back, -1.0), 0.0)?;
    let thin_hit = thin.iter().any(|&(i, ..)| i == hit.object);
    if (aim_thin && !thin_hit) || hit.t <= distance + 1e-3 || dot(hit.normal, back) < MIN_COS {
        return None;
    }
    let look_at = add(launch, scale(back, -hit.t));
    let position = add(look_at, scale(back, distance));
    let right = normalize(cross([0.0, 0.0, 1.0], back));
    let up = cross(back, right);
    Some(Placement { pose: [0, 1, 2].map(|r| [right[r], up[r], back[r], position[r]]), distance, look_at })
}
