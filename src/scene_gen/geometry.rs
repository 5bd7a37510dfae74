//! The analytic test scene, ray cast exactly: a floor slab, a patterned sphere, a checkered box, a banded
//! cylinder and a thin gate of poles, Lambertian under one directional light with hard shadows.
//! Z is up (as in the Blender scenes) and everything lies inside [-1.3, 1.3]^3. The multi-scale scene
//! (`super::multiscale`) adds fine patterns ([`Detail`]) and thin structure to the same objects.

use super::texture::Detail;

pub(crate) type V3 = [f64; 3];

/// What a primary ray sees.
pub(crate) struct Sample {
    pub rgb: V3,
    /// Distance along the (unit) ray.
    pub t: f64,
    /// Outward unit normal, world frame.
    pub normal: V3,
    /// Index of the object hit in the scene's list.
    pub object: usize,
}

pub(crate) enum Shape {
    Sphere {
        centre: V3,
        radius: f64,
    },
    /// A box turned by `yaw` radians about +Z.
    Cuboid {
        centre: V3,
        half: V3,
        yaw: f64,
    },
    /// A capped cylinder between two points.
    Cylinder {
        a: V3,
        b: V3,
        radius: f64,
    },
}

#[derive(Clone, Copy)]
pub(crate) enum Paint {
    Floor,
    Swirl,
    /// Squares of this edge in the box's own frame.
    Checker(f64),
    Bands,
    Plain(V3),
}

pub(crate) struct Object {
    pub shape: Shape,
    pub paint: Paint,
    /// Fine patterns on top of the paint (none in the standard scene).
    pub details: Vec<Detail>,
}

impl Object {
    pub fn new(shape: Shape, paint: Paint) -> Self {
        Self { shape, paint, details: Vec::new() }
    }

    pub fn with(mut self, detail: Detail) -> Self {
        self.details.push(detail);
        self
    }
}

/// Where a ray meets a shape.
struct Surface {
    t: f64,
    /// Outward unit normal, world frame.
    normal: V3,
    /// The point and the normal in the shape's own frame (the box's checker is painted there).
    local: V3,
    local_normal: V3,
}

struct Hit {
    surface: Surface,
    object: usize,
}

pub(crate) struct Scene {
    pub objects: Vec<Object>,
    /// Unit vector towards the light.
    pub light: V3,
}

const AMBIENT: f64 = 0.3;
const DIFFUSE: f64 = 0.7;
/// Offset of shadow rays off the surface, against self-intersection.
const SHADOW_BIAS: f64 = 1e-6;
/// Floor on the cosine of incidence when a footprint is stretched across a slanted surface.
const MIN_COS: f64 = 0.25;

impl Scene {
    pub fn standard() -> Self {
        Self { objects: standard_objects(), light: normalize([0.4, 0.3, 0.85]) }
    }

    /// The colour, depth and normal seen along the unit ray `d` from `o`, or `None` for background.
    ///
    /// `spread`: the angle one sample covers (radians); fine patterns are box-filtered over its footprint.
    pub fn trace(&self, o: V3, d: V3, spread: f64) -> Option<Sample> {
        let Hit { surface: s, object } = self.nearest(o, d)?;
        let p = add(o, scale(d, s.t));
        let n_dot_l = dot(s.normal, self.light);
        let lit = n_dot_l > 0.0 && self.nearest(add(p, scale(s.normal, SHADOW_BIAS)), self.light).is_none();
        let light = AMBIENT + if lit { DIFFUSE * n_dot_l } else { 0.0 };
        let footprint = s.t * spread / (-dot(s.normal, d)).max(MIN_COS);
        let rgb = shade(&self.objects[object], p, &s, footprint).map(|a| (a * light).clamp(0.05, 0.95));
        Some(Sample { rgb, t: s.t, normal: s.normal, object })
    }

    fn nearest(&self, o: V3, d: V3) -> Option<Hit> {
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(object, item)| intersect(&item.shape, o, d).map(|surface| Hit { surface, object }))
            .min_by(|a, b| a.surface.t.total_cmp(&b.surface.t))
    }
}

/// The standard scene's objects: floor, sphere, box, cylinder, gate.
pub(crate) fn standard_objects() -> Vec<Object> {
    let gold = Paint::Plain([0.85, 0.8, 0.3]);
    let pole = |x: f64, y: f64| Object::new(Shape::Cylinder { a: [x, y, -0.7], b: [x, y, 0.55], radius: 0.02 }, gold);
    vec![
        Object::new(Shape::Cuboid { centre: [0.0, 0.0, -0.75], half: [1.0, 1.0, 0.05], yaw: 0.0 }, Paint::Floor),
        Object::new(Shape::Sphere { centre: [-0.4, -0.35, -0.35], radius: 0.35 }, Paint::Swirl),
        Object::new(Shape::Cuboid { centre: [0.42, -0.3, -0.4], half: [0.3, 0.3, 0.3], yaw: 0.5 }, Paint::Checker(0.2)),
        Object::new(Shape::Cylinder { a: [0.15, 0.45, -0.7], b: [0.15, 0.45, 0.1], radius: 0.22 }, Paint::Bands),
        pole(-0.7, 0.2),
        pole(-0.7, 0.75),
        Object::new(Shape::Cylinder { a: [-0.7, 0.2, 0.55], b: [-0.7, 0.75, 0.55], radius: 0.02 }, gold),
    ]
}

/// The object's albedo at `p` with its fine patterns filtered over `footprint`.
fn shade(object: &Object, p: V3, s: &Surface, footprint: f64) -> V3 {
    let base = albedo(object.paint, p, s);
    if object.details.is_empty() {
        return base;
    }
    let across = dominant_axis(s.local_normal);
    let gain = 1.0 + object.details.iter().map(|d| d.value(s.local, across, footprint)).sum::<f64>();
    base.map(|a| (a * gain).clamp(0.05, 0.95))
}

fn dominant_axis(n: V3) -> usize {
    (0..3).max_by(|&a, &b| n[a].abs().total_cmp(&n[b].abs())).unwrap_or(2)
}

/// The nearest surface in front of `o` along the unit ray `d`.
fn intersect(shape: &Shape, o: V3, d: V3) -> Option<Surface> {
    match *shape {
        Shape::Sphere { centre, radius } => {
            let oc = sub(o, centre);
            let b = dot(oc, d);
            let h = b * b - (dot(oc, oc) - radius * radius);
            if h < 0.0 {
                return None;
            }
            let t = [-b - h.sqrt(), -b + h.sqrt()].into_iter().find(|&t| t > 0.0)?;
            let local = sub(add(o, scale(d, t)), centre);
            let normal = scale(local, 1.0 / radius);
            Some(Surface { t, normal, local, local_normal: normal })
        }
        Shape::Cuboid { centre, half, yaw } => {
            let (lo, ld) = (rotate_z(sub(o, centre), -yaw), rotate_z(d, -yaw));
            let (mut t_near, mut t_far, mut axis) = (f64::NEG_INFINITY, f64::INFINITY, 0);
            for k in 0..3 {
                if ld[k].abs() < 1e-12 {
                    if lo[k].abs() > half[k] {
                        return None;
                    }
                    continue;
                }
                let (t0, t1) = ((-half[k] - lo[k]) / ld[k], (half[k] - lo[k]) / ld[k]);
                let (t0, t1) = (t0.min(t1), t0.max(t1));
                if t0 > t_near {
                    (t_near, axis) = (t0, k);
                }
                t_far = t_far.min(t1);
            }
            // Rays from inside the box (never the case for cameras or shadow rays here) see nothing.
            if t_near > t_far || t_near <= 0.0 {
                return None;
            }
            let mut local_normal = [0.0; 3];
            local_normal[axis] = -ld[axis].signum();
            let local = add(lo, scale(ld, t_near));
            Some(Surface { t: t_near, normal: rotate_z(local_normal, yaw), local, local_normal })
        }
        Shape::Cylinder { a, b, radius } => {
            // Inigo Quilez's capped-cylinder intersection.
            let (ba, oc) = (sub(b, a), sub(o, a));
            let (baba, bard, baoc) = (dot(ba, ba), dot(ba, d), dot(ba, oc));
            let k2 = baba - bard * bard;
            let k1 = baba * dot(oc, d) - baoc * bard;
            let k0 = baba * dot(oc, oc) - baoc * baoc - radius * radius * baba;
            let h = k1 * k1 - k2 * k0;
            if h < 0.0 || k2.abs() < 1e-12 {
                return None;
            }
            let h = h.sqrt();
            let t = (-k1 - h) / k2;
            let y = baoc + t * bard;
            let (t, normal) = if y > 0.0 && y < baba {
                (t, scale(sub(add(oc, scale(d, t)), scale(ba, y / baba)), 1.0 / radius))
            } else {
                let t = (if y < 0.0 { 0.0 } else { baba } - baoc) / bard;
                if (k1 + k2 * t).abs() >= h {
                    return None;
                }
                (t, scale(ba, y.signum() / baba.sqrt()))
            };
            (t > 0.0).then(|| Surface { t, normal, local: sub(add(o, scale(d, t)), a), local_normal: normal })
        }
    }
}

/// Surface colours, all within [0.1, 0.9] so lit colours stay inside [0.05, 0.95].
fn albedo(paint: Paint, p: V3, s: &Surface) -> V3 {
    match paint {
        Paint::Floor => {
            let wave = 0.08 * (3.0 * p[0]).sin() * (3.0 * p[1]).sin();
            [0.62 + wave, 0.56 + wave, 0.45 + wave]
        }
        Paint::Swirl => [
            0.5 + 0.35 * (6.0 * p[0] + 2.0 * p[2]).sin(),
            0.5 + 0.35 * (5.0 * p[1] - 3.0 * p[2] + 1.0).sin(),
            0.5 + 0.35 * (4.0 * (p[0] + p[1]) + 2.0).sin(),
        ],
        Paint::Checker(edge) => {
            // Only the two coordinates along the face: the third sits exactly on a square boundary.
            let across = dominant_axis(s.local_normal);
            let parity: i64 = (0..3).filter(|&k| k != across).map(|k| (s.local[k] / edge).floor() as i64).sum();
            if parity.rem_euclid(2) == 0 {
                [0.85, 0.2, 0.15]
            } else {
                [0.9, 0.85, 0.7]
            }
        }
        Paint::Bands => {
            let band = 0.5 + 0.5 * (10.0 * p[2]).sin();
            [0.15 + 0.2 * band, 0.45 + 0.35 * band, 0.3]
        }
        Paint::Plain(colour) => colour,
    }
}

pub(crate) fn rotate_z(v: V3, angle: f64) -> V3 {
    let (s, c) = angle.sin_cos();
    [c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]]
}

pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(crate) fn scale(a: V3, s: f64) -> V3 {
    a.map(|x| x * s)
}

pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub(crate) fn normalize(a: V3) -> V3 {
    scale(a, 1.0 / dot(a, a).sqrt())
}
