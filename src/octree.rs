//! The Inf-NeRF octree (SPEC §1): which nodes exist, and which node a sample belongs to.
//!
//! Nodes are stored breadth-first, so the tree cut at depth k is a prefix of `nodes`. The
//! [`Node`] layout is mirrored by a WGSL struct, and [`Octree::level_node`] by a WGSL kernel.
//! `Camera::rotation[i][j]` is read as row i, column j (column j = camera axis j).

use crate::data::Camera;
use serde_json::{json, Value};

/// Marks an absent child: its samples stay with the parent (not empty space).
pub const NO_CHILD: u32 = u32::MAX;

/// Deepest level `build` ever creates, whatever it is asked: bounds memory on bad input.
pub const DEPTH_LIMIT: u32 = 12;

/// Distance below which a node counts as touching the camera centre (cube units).
const MIN_DEPTH: f32 = 1.0e-4;

/// Near plane of the visibility frustum (cube units); keeps the clipped frustum finite.
const NEAR: f32 = 1.0e-5;

crate::gpu_struct! {
    /// One octree node, 64 bytes; the kernels read the same struct (`nodes`).
    pub struct Node {
        /// Corner with the smallest coordinates, in the cube frame.
        pub min: [f32; 3],
        /// Edge length (the root's is 2).
        pub edge: f32,
        /// Indices into `Octree::nodes`, by octant (see [`child_index`]); `NO_CHILD` where absent.
        pub children: [u32; 8],
        /// Index of the parent; `NO_CHILD` for the root.
        pub parent: u32,
        /// Level: 0 for the root.
        pub depth: u32,
        /// Ground sample distance: edge / finest encoding resolution.
        pub gsd: f32,
        pub _pad: u32,
    }
}

impl Node {
    fn new(min: [f32; 3], edge: f32, parent: u32, depth: u32, finest_resolution: u32) -> Self {
        Self { min, edge, children: [NO_CHILD; 8], parent, depth, gsd: gsd(edge, finest_resolution), _pad: 0 }
    }

    /// Corner of the child in octant `c` (same arithmetic as [`child_index`]'s centre).
    pub fn child_min(&self, c: usize) -> [f32; 3] {
        let half = 0.5 * self.edge;
        let mut min = self.min;
        for (axis, m) in min.iter_mut().enumerate() {
            if c >> axis & 1 == 1 {
                *m += half;
            }
        }
        min
    }

    /// Whether `p` lies in the node's closed box.
    pub fn contains(&self, p: [f32; 3]) -> bool {
        (0..3).all(|a| p[a] >= self.min[a] && p[a] <= self.min[a] + self.edge)
    }
}

/// gsd = edge / finest resolution (a resolution of 0 is read as 1, so the gsd stays finite).
pub fn gsd(edge: f32, finest_resolution: u32) -> f32 {
    edge / finest_resolution.max(1) as f32
}

/// Octant of `p` in `node`: bit a is set where p[a] >= the node centre on axis a (x = bit 0).
pub fn child_index(node: &Node, p: [f32; 3]) -> usize {
    let half = 0.5 * node.edge;
    (0..3).filter(|&axis| p[axis] >= node.min[axis] + half).fold(0, |c, axis| c | 1 << axis)
}

/// Radius of a sample at distance `t` along a unit-length ray: t * pixel radius * 2^(u - 0.5).
///
/// `u` in [0, 1) jitters the level while training; evaluation passes u = 0.5 (no jitter).
pub fn sample_radius(t: f32, pixel_radius: f32, u: f32) -> f32 {
    t * pixel_radius * 2f32.powf(u - 0.5)
}

/// Angular radius of one full-resolution pixel of `camera`, in radians: 0.5 / fx.
///
/// A pyramid level at scale 1/2^l has pixels 2^l times bigger: multiply by 2^l.
pub fn pixel_radius(camera: &Camera) -> f32 {
    0.5 / camera.fx
}

/// The octree: `nodes[0]` is the root cube [-1,1]^3; nodes are in breadth-first order.
#[derive(Clone, Debug, PartialEq)]
pub struct Octree {
    pub nodes: Vec<Node>,
}

impl Octree {
    /// The root alone.
    pub fn root(finest_resolution: u32) -> Self {
        Self { nodes: vec![Node::new([-1.0; 3], 2.0, NO_CHILD, 0, finest_resolution)] }
    }

    /// Every node down to `max_depth` (capped at 6: 8^6 nodes): for tests and small scenes.
    pub fn full(max_depth: u32, finest_resolution: u32) -> Self {
        Self::grow(max_depth.min(6), finest_resolution, |_, _| true)
    }

    /// Splits only where a training camera sees a region finer than the node's gsd (SPEC §1).
    ///
    /// Child c of node N is created when N.depth < max_depth and some camera sees the child's
    /// box with footprint < N.gsd, footprint = [`view_depth`] x [`pixel_radius`]. A sample
    /// there has radius about that footprint, so [`Octree::level_node`] would descend into it.
    /// Cameras with a non-positive or non-finite fx, or an empty image, are ignored.
    pub fn build(cameras: &[Camera], max_depth: u32, finest_resolution: u32) -> Self {
        let frusta: Vec<Frustum> = cameras.iter().filter_map(Frustum::new).collect();
        Self::grow(max_depth.min(DEPTH_LIMIT), finest_resolution, |parent, child_min| {
            let edge = 0.5 * parent.edge;
            // The nearest box point bounds the view depth from below: a cheap early reject.
            frusta.iter().any(|f| {
                box_distance(f.centre, child_min, edge) * f.pixel_radius < parent.gsd
                    && f.depth(child_min, edge).is_some_and(|d| d * f.pixel_radius < parent.gsd)
            })
        })
    }

    /// Breadth-first growth: `wanted(parent, child_min)` says whether a child is created.
    fn grow(max_depth: u32, finest_resolution: u32, mut wanted: impl FnMut(&Node, [f32; 3]) -> bool) -> Self {
        let mut tree = Self::root(finest_resolution);
        let mut level = 0..1;
        while level.start < level.end {
            let next_start = tree.nodes.len();
            for index in level.clone() {
                let node = tree.nodes[index];
                if node.depth >= max_depth {
                    continue;
                }
                for c in 0..8 {
                    let min = node.child_min(c);
                    if wanted(&node, min) {
                        let child = tree.nodes.len() as u32;
                        tree.nodes[index].children[c] = child;
                        let edge = 0.5 * node.edge;
                        tree.nodes.push(Node::new(min, edge, index as u32, node.depth + 1, finest_resolution));
                    }
                }
            }
            level = next_start..tree.nodes.len();
        }
        tree
    }

    /// The node a sample at `p` with radius `radius` belongs to, in the tree cut at depth `cut`.
    ///
    /// Exact rule (the WGSL kernel runs the same loop):
    /// `node = root; while node.depth < cut && radius < node.gsd { c = child_index(node, p);
    /// if node.children[c] == NO_CHILD { break } node = children[c] }`.
    /// A NaN radius stays at the root; an empty tree gives `NO_CHILD`.
    pub fn level_node(&self, p: [f32; 3], radius: f32, cut: u32) -> u32 {
        let Some(mut node) = self.nodes.first() else {
            return NO_CHILD;
        };
        let mut index = 0u32;
        while node.depth < cut && radius < node.gsd {
            let child = node.children[child_index(node, p)];
            let Some(next) = self.nodes.get(child as usize) else {
                break;
            };
            index = child;
            node = next;
        }
        index
    }

    /// Nodes per depth: entry d counts the depth-d nodes.
    pub fn depth_counts(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        for node in &self.nodes {
            let d = node.depth as usize;
            if counts.len() <= d {
                counts.resize(d + 1, 0);
            }
            counts[d] += 1;
        }
        counts
    }

    /// Deepest level present.
    pub fn max_depth(&self) -> u32 {
        self.nodes.last().map_or(0, |n| n.depth)
    }

    /// Number of nodes in the tree cut at depth `cut`: that cut is `nodes[..prefix_len(cut)]`.
    pub fn prefix_len(&self, cut: u32) -> usize {
        self.nodes.partition_point(|n| n.depth <= cut)
    }

    /// The layout for the checkpoint sidecar: per node min, edge, gsd, depth, parent, children.
    ///
    /// Absent children and the root's parent are `null`.
    pub fn to_layout_json(&self) -> Value {
        let index = |i: u32| if i == NO_CHILD { Value::Null } else { json!(i) };
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "min": n.min,
                    "edge": n.edge,
                    "gsd": n.gsd,
                    "depth": n.depth,
                    "parent": index(n.parent),
                    "children": n.children.iter().map(|&c| index(c)).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "version": LAYOUT_VERSION, "nodes": nodes })
    }

    /// Reads [`Octree::to_layout_json`]'s output back, checking that it is a valid tree.
    pub fn from_layout_json(value: &Value) -> Result<Self, LayoutError> {
        let version = value.get("version").and_then(Value::as_u64);
        if version != Some(LAYOUT_VERSION) {
            return Err(LayoutError::new(None, "version", format!("must be {LAYOUT_VERSION}")));
        }
        let list = value
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or_else(|| LayoutError::new(None, "nodes", "must be an array".into()))?;
        if list.is_empty() {
            return Err(LayoutError::new(None, "nodes", "must hold at least the root".into()));
        }
        if list.len() >= NO_CHILD as usize {
            return Err(LayoutError::new(None, "nodes", "too many nodes".into()));
        }
        let nodes = list.iter().enumerate().map(|(i, v)| parse_node(i, v)).collect::<Result<Vec<_>, _>>()?;
        let tree = Self { nodes };
        tree.validate()?;
        Ok(tree)
    }

    /// Checks root, parent/child links, child boxes and breadth-first order.
    fn validate(&self) -> Result<(), LayoutError> {
        let root = &self.nodes[0];
        if root.min != [-1.0; 3] || root.edge != 2.0 || root.depth != 0 || root.parent != NO_CHILD {
            return Err(LayoutError::new(
                Some(0),
                "min",
                "the root must be the cube [-1,1]^3, depth 0, no parent".into(),
            ));
        }
        let mut parent_of = vec![NO_CHILD; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            let bad = |field: &'static str, message: String| Err(LayoutError::new(Some(i), field, message));
            if !(node.edge.is_finite() && node.edge > 0.0 && node.gsd.is_finite() && node.gsd > 0.0) {
                return bad("gsd", "edge and gsd must be positive numbers".into());
            }
            if i > 0 && node.depth < self.nodes[i - 1].depth {
                return bad("depth", "nodes must be in breadth-first order (depth never decreasing)".into());
            }
            for (c, &child) in node.children.iter().enumerate() {
                if child == NO_CHILD {
                    continue;
                }
                let field = "children";
                let Some(kid) = self.nodes.get(child as usize) else {
                    return bad(field, format!("[{c}] = {child} is past the last node"));
                };
                if child as usize <= i || parent_of[child as usize] != NO_CHILD {
                    return bad(field, format!("[{c}] = {child} is the root, itself, earlier, or listed twice"));
                }
                parent_of[child as usize] = i as u32;
                if kid.parent != i as u32 || kid.depth != node.depth + 1 {
                    return bad(field, format!("[{c}] = {child} does not name this node as parent one level up"));
                }
                if kid.edge != 0.5 * node.edge || kid.gsd != 0.5 * node.gsd || kid.min != node.child_min(c) {
                    return bad(field, format!("[{c}] = {child} is not octant {c} of this node's box and gsd"));
                }
            }
            if i > 0 && parent_of[i] == NO_CHILD {
                return bad("parent", "no node lists this one as a child".into());
            }
        }
        Ok(())
    }
}

/// Version of the layout JSON, bumped when its fields change.
const LAYOUT_VERSION: u64 = 1;

/// A malformed tree layout, naming the node and field.
#[derive(Debug, thiserror::Error)]
#[error("tree layout: {}{field}: {message}", node.map(|n| format!("node {n}: ")).unwrap_or_default())]
pub struct LayoutError {
    pub node: Option<usize>,
    pub field: &'static str,
    pub message: String,
}

impl LayoutError {
    fn new(node: Option<usize>, field: &'static str, message: String) -> Self {
        Self { node, field, message }
    }
}

fn parse_node(i: usize, v: &Value) -> Result<Node, LayoutError> {
    let bad = |field: &'static str, message: &str| LayoutError::new(Some(i), field, message.to_string());
    let f32_of = |x: &Value| x.as_f64().map(|x| x as f32).filter(|x| x.is_finite());
    let index_of = |x: &Value| match x {
        Value::Null => Some(NO_CHILD),
        _ => x.as_u64().and_then(|x| u32::try_from(x).ok()).filter(|&x| x != NO_CHILD),
    };
    let min = v
        .get("min")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 3)
        .and_then(|a| Some([f32_of(&a[0])?, f32_of(&a[1])?, f32_of(&a[2])?]))
        .ok_or_else(|| bad("min", "must be 3 finite numbers"))?;
    let edge = v.get("edge").and_then(f32_of).ok_or_else(|| bad("edge", "must be a finite number"))?;
    let gsd = v.get("gsd").and_then(f32_of).ok_or_else(|| bad("gsd", "must be a finite number"))?;
    let depth = v
        .get("depth")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok())
        .ok_or_else(|| bad("depth", "must be a non-negative integer"))?;
    let parent = v.get("parent").and_then(index_of).ok_or_else(|| bad("parent", "must be a node index or null"))?;
    let list = v
        .get("children")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 8)
        .ok_or_else(|| bad("children", "must be 8 entries"))?;
    let mut children = [NO_CHILD; 8];
    for (slot, x) in children.iter_mut().zip(list) {
        *slot = index_of(x).ok_or_else(|| bad("children", "entries must be node indices or null"))?;
    }
    Ok(Node { min, edge, children, parent, depth, gsd, _pad: 0 })
}

/// Distance from `camera`'s centre to the nearest point of the box that lies in its view
/// frustum, at least a small epsilon; `None` when the box is outside the frustum.
///
/// The frustum is the ideal pinhole's (distortion ignored), from a tiny near plane to infinity.
pub fn view_depth(camera: &Camera, min: [f32; 3], edge: f32) -> Option<f32> {
    Frustum::new(camera)?.depth(min, edge)
}

/// A camera's view frustum in the cube frame, as half-spaces n.p + d >= 0.
struct Frustum {
    centre: [f32; 3],
    planes: [([f32; 3], f32); 5],
    pixel_radius: f32,
}

impl Frustum {
    fn new(camera: &Camera) -> Option<Self> {
        let (w, h) = (camera.width as f32, camera.height as f32);
        let finite = [camera.fx, camera.fy, camera.cx, camera.cy].iter().all(|x| x.is_finite())
            && camera.position.iter().chain(camera.rotation.iter().flatten()).all(|x| x.is_finite());
        if !finite || camera.fx <= 0.0 || camera.fy <= 0.0 || camera.width == 0 || camera.height == 0 {
            return None;
        }
        // Camera frame: looks down -Z, so a visible point has s = -z > 0; u = cx + fx x / s,
        // v = cy - fy y / s (image rows go down while +Y is up).
        let cam_planes: [([f32; 3], f32); 5] = [
            ([camera.fx, 0.0, -camera.cx], 0.0),        // u >= 0
            ([-camera.fx, 0.0, -(w - camera.cx)], 0.0), // u <= width
            ([0.0, -camera.fy, -camera.cy], 0.0),       // v >= 0
            ([0.0, camera.fy, -(h - camera.cy)], 0.0),  // v <= height
            ([0.0, 0.0, -1.0], -NEAR),                  // s >= near
        ];
        let r = camera.rotation;
        let c = camera.position;
        // World normal = R n (rotation columns are the camera axes); offset moves to the centre.
        let planes = cam_planes.map(|(n, d)| {
            let nw = [0, 1, 2].map(|i| r[i][0] * n[0] + r[i][1] * n[1] + r[i][2] * n[2]);
            (nw, d - dot(nw, c))
        });
        Some(Self { centre: c, planes, pixel_radius: pixel_radius(camera) })
    }

    /// Nearest distance from the centre to box ∩ frustum (see [`view_depth`]).
    fn depth(&self, min: [f32; 3], edge: f32) -> Option<f32> {
        let max = min.map(|m| m + edge);
        let c = self.centre;
        if (0..3).all(|a| c[a] >= min[a] && c[a] <= max[a]) {
            return Some(MIN_DEPTH);
        }
        // A non-empty box ∩ frustum (unbounded far) crosses the box surface, and its nearest
        // point to an outside centre lies on that surface: clip each face by the frustum.
        let mut best: Option<f32> = None;
        for axis in 0..3 {
            let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
            for plane_value in [min[axis], max[axis]] {
                let corner = |a: f32, b: f32| {
                    let mut p = [0.0; 3];
                    p[axis] = plane_value;
                    p[u] = a;
                    p[v] = b;
                    p
                };
                let mut poly = vec![
                    corner(min[u], min[v]),
                    corner(max[u], min[v]),
                    corner(max[u], max[v]),
                    corner(min[u], max[v]),
                ];
                for &(n, d) in &self.planes {
                    poly = clip(&poly, n, d);
                    if poly.is_empty() {
                        break;
                    }
                }
                if poly.is_empty() {
                    continue;
                }
                let in_plane =
                    polygon_distance_2d([c[u], c[v]], &poly.iter().map(|p| [p[u], p[v]]).collect::<Vec<_>>());
                let off_plane = c[axis] - plane_value;
                let dist = (in_plane * in_plane + off_plane * off_plane).sqrt();
                best = Some(best.map_or(dist, |b| b.min(dist)));
            }
        }
        best.map(|d| d.max(MIN_DEPTH))
    }
}

/// Distance from `p` to the box [min, min + edge].
fn box_distance(p: [f32; 3], min: [f32; 3], edge: f32) -> f32 {
    let gap = |a: usize| (min[a] - p[a]).max(p[a] - min[a] - edge).max(0.0);
    (gap(0) * gap(0) + gap(1) * gap(1) + gap(2) * gap(2)).sqrt()
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Sutherland–Hodgman: the part of a convex polygon where n.p + d >= 0.
fn clip(poly: &[[f32; 3]], n: [f32; 3], d: f32) -> Vec<[f32; 3]> {
    let mut out = Vec::with_capacity(poly.len() + 1);
    for (i, &a) in poly.iter().enumerate() {
        let b = poly[(i + 1) % poly.len()];
        let (da, db) = (dot(n, a) + d, dot(n, b) + d);
        if da >= 0.0 {
            out.push(a);
        }
        if (da >= 0.0) != (db >= 0.0) {
            let t = da / (da - db);
            out.push([0, 1, 2].map(|k| a[k] + t * (b[k] - a[k])));
        }
    }
    out
}

/// Distance from `p` to a convex polygon in the plane (0 inside).
fn polygon_distance_2d(p: [f32; 2], poly: &[[f32; 2]]) -> f32 {
    let n = poly.len();
    let cross = |a: [f32; 2], b: [f32; 2]| (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
    let sides: Vec<f32> = (0..n).map(|i| cross(poly[i], poly[(i + 1) % n])).collect();
    if n >= 3 && (sides.iter().all(|&s| s >= 0.0) || sides.iter().all(|&s| s <= 0.0)) {
        return 0.0;
    }
    (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            let ab = [b[0] - a[0], b[1] - a[1]];
            let ap = [p[0] - a[0], p[1] - a[1]];
            let len2 = ab[0] * ab[0] + ab[1] * ab[1];
            let t = if len2 > 0.0 { ((ap[0] * ab[0] + ap[1] * ab[1]) / len2).clamp(0.0, 1.0) } else { 0.0 };
            let q = [ap[0] - t * ab[0], ap[1] - t * ab[1]];
            (q[0] * q[0] + q[1] * q[1]).sqrt()
        })
        .fold(f32::INFINITY, f32::min)
}
