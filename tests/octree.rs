//! Octree building, level choice, breadth-first order and the layout JSON.

use infnerf::data::Camera;
use infnerf::octree::{child_index, pixel_radius, sample_radius, view_depth, Octree, NO_CHILD};

/// A camera at `position` looking at `target`, +Y roughly up, square image.
fn look_at(position: [f32; 3], target: [f32; 3], fx: f32, size: u32) -> Camera {
    let sub = |a: [f32; 3], b: [f32; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let cross =
        |a: [f32; 3], b: [f32; 3]| [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    let norm = |a: [f32; 3]| {
        let l = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
        [a[0] / l, a[1] / l, a[2] / l]
    };
    let back = norm(sub(position, target)); // camera +Z points away from the view direction
    let up_hint = if back[1].abs() > 0.9 { [1.0, 0.0, 0.0] } else { [0.0, 1.0, 0.0] };
    let right = norm(cross(up_hint, back));
    let up = cross(back, right);
    Camera {
        rotation: [0, 1, 2].map(|i| [right[i], up[i], back[i]]),
        position,
        width: size,
        height: size,
        fx,
        fy: fx,
        cx: size as f32 / 2.0,
        cy: size as f32 / 2.0,
        distortion: [0.0; 4],
    }
}

/// Distance from `p` to the box [min, min + edge].
fn box_distance(p: [f32; 3], min: [f32; 3], edge: f32) -> f32 {
    (0..3).map(|a| (min[a] - p[a]).max(p[a] - min[a] - edge).max(0.0).powi(2)).sum::<f32>().sqrt()
}

fn assert_bfs(tree: &Octree) {
    assert!(tree.nodes.windows(2).all(|w| w[0].depth <= w[1].depth), "depths must never decrease");
    for (i, node) in tree.nodes.iter().enumerate() {
        for (c, &child) in node.children.iter().enumerate() {
            if child != NO_CHILD {
                let kid = &tree.nodes[child as usize];
                assert!(child as usize > i);
                assert_eq!(kid.parent, i as u32);
                assert_eq!(kid.depth, node.depth + 1);
                assert_eq!(kid.min, node.child_min(c));
            }
        }
    }
}

#[test]
fn node_is_64_bytes() {
    assert_eq!(std::mem::size_of::<infnerf::octree::Node>(), 64);
}

#[test]
fn camera_near_a_corner_splits_only_near_it() {
    // pixel radius 1/16, finest resolution 32: a node splits within half its edge of the camera.
    let position = [0.95, 0.95, 0.95];
    let camera = look_at(position, [0.0, 0.0, 0.0], 8.0, 64);
    let pr = pixel_radius(&camera);
    let tree = Octree::build(&[camera], 3, 32);
    assert_bfs(&tree);
    assert_eq!(tree.max_depth(), 3, "the node holding the camera reaches max_depth");
    let root = &tree.nodes[0];
    assert_ne!(root.children[7], NO_CHILD, "octant holding the camera");
    assert_ne!(root.children[6], NO_CHILD, "octant 0.95 away");
    assert_eq!(root.children[0], NO_CHILD, "far octant, 1.65 away");
    assert_eq!(root.children[1], NO_CHILD, "octant 1.34 away");
    for node in &tree.nodes[1..] {
        let parent = &tree.nodes[node.parent as usize];
        let d = box_distance(position, node.min, node.edge);
        assert!(d * pr < parent.gsd, "node at depth {} is {d} away: too far to need", node.depth);
    }
    // Near the camera the tree is deep; at the far corner it stays the root.
    assert_eq!(tree.nodes[tree.level_node([0.94, 0.94, 0.94], 0.0, 10) as usize].depth, 3);
    assert_eq!(tree.level_node([-0.9, -0.9, -0.9], 0.0, 10), 0);
    assert!(tree.nodes.len() < 8 + 64 + 512, "sparse, not full");
}

#[test]
fn camera_looking_away_splits_nothing() {
    let camera = look_at([0.0, 0.0, 1.5], [0.0, 0.0, 5.0], 8.0, 64);
    assert_eq!(Octree::build(&[camera], 3, 32).nodes.len(), 1);
    assert_eq!(view_depth(&camera, [-1.0; 3], 2.0), None);
    let toward = look_at([0.0, 0.0, 1.5], [0.0, 0.0, 0.0], 8.0, 64);
    let depth = view_depth(&toward, [-1.0; 3], 2.0).unwrap();
    assert!((depth - 0.5).abs() < 1e-5, "{depth}");
}

#[test]
fn view_depth_is_nearest_visible_point_not_nearest_point() {
    // A narrow camera at z = 2 looking down -Z sees the box top only around x = y = 0: the box
    // corner nearest to the camera is off to the side, but the visible part is straight ahead.
    let camera = look_at([0.0, 0.0, 2.0], [0.0, 0.0, 0.0], 1000.0, 10);
    let depth = view_depth(&camera, [-1.0; 3], 2.0).unwrap();
    assert!((depth - 1.0).abs() < 1e-4, "{depth}");
    // The box [0.5,1]x[0.5,1]x[0,1] is outside that narrow view.
    assert_eq!(view_depth(&camera, [0.5, 0.5, 0.0], 0.5), None);
    // Tilted toward +x: the view meets the top face at x = 0.5, not at (0, 0, 1) right below.
    let camera = look_at([0.0, 0.0, 2.0], [1.0, 0.0, 0.0], 1000.0, 10);
    let depth = view_depth(&camera, [-1.0; 3], 2.0).unwrap();
    assert!((depth - 1.25f32.sqrt()).abs() < 1e-2, "{depth}");
}

#[test]
fn bad_cameras_are_ignored() {
    let mut camera = look_at([0.9, 0.9, 0.9], [0.0; 3], 8.0, 64);
    camera.fx = f32::NAN;
    assert_eq!(Octree::build(&[camera], 3, 32).nodes.len(), 1);
    camera.fx = 0.0;
    assert_eq!(Octree::build(&[camera], 3, 32).nodes.len(), 1);
    let mut camera = look_at([0.9, 0.9, 0.9], [0.0; 3], 8.0, 64);
    camera.width = 0;
    assert_eq!(Octree::build(&[camera], 3, 32).nodes.len(), 1);
    assert_eq!(Octree::build(&[], 3, 32).nodes.len(), 1);
}

#[test]
fn max_depth_is_respected() {
    // A camera inside the cube with tiny pixels wants every node split everywhere it looks.
    let camera = look_at([0.1, 0.2, 0.3], [0.0, 0.0, -1.0], 10_000.0, 100);
    for max_depth in 0..4 {
        let tree = Octree::build(&[camera], max_depth, 64);
        assert_eq!(tree.max_depth(), max_depth);
        assert_eq!(tree.depth_counts().len(), max_depth as usize + 1);
        assert_bfs(&tree);
    }
}

#[test]
fn full_tree_counts_and_prefixes() {
    let tree = Octree::full(2, 16);
    assert_eq!(tree.depth_counts(), vec![1, 8, 64]);
    assert_eq!(tree.prefix_len(0), 1);
    assert_eq!(tree.prefix_len(1), 9);
    assert_eq!(tree.prefix_len(7), 73);
    assert_bfs(&tree);
    for node in &tree.nodes {
        assert_eq!(node.gsd, node.edge / 16.0);
    }
}

#[test]
fn level_choice_follows_radius() {
    let tree = Octree::full(3, 16);
    let p = [0.3, -0.4, 0.7];
    let root_gsd = tree.nodes[0].gsd;
    // Coarser than the root's gsd: the root.
    assert_eq!(tree.level_node(p, root_gsd * 1.01, 10), 0);
    assert_eq!(tree.level_node(p, root_gsd, 10), 0, "radius == gsd does not descend");
    // Between depth-1 and root gsd: a depth-1 node containing p.
    let n = tree.level_node(p, root_gsd * 0.75, 10) as usize;
    assert_eq!(tree.nodes[n].depth, 1);
    assert!(tree.nodes[n].contains(p));
    // Fine: the deepest node holding p.
    let n = tree.level_node(p, 1e-6, 10) as usize;
    assert_eq!(tree.nodes[n].depth, 3);
    assert!(tree.nodes[n].contains(p));
    assert_eq!(tree.level_node(p, f32::NAN, 10), 0);
}

#[test]
fn cut_limits_depth() {
    let tree = Octree::full(3, 16);
    let p = [-0.3, 0.4, -0.7];
    for cut in 0..5u32 {
        let n = tree.level_node(p, 1e-6, cut) as usize;
        assert_eq!(tree.nodes[n].depth, cut.min(3));
        assert!(n < tree.prefix_len(cut), "a cut is a prefix of the node list");
    }
}

#[test]
fn missing_child_keeps_sample_at_parent() {
    let camera = look_at([0.95, 0.95, 0.95], [0.0; 3], 8.0, 64);
    let tree = Octree::build(&[camera], 3, 32);
    // Octant 0 of the root is missing: a fine sample there stays at the root.
    assert_eq!(tree.nodes[0].children[0], NO_CHILD);
    assert_eq!(tree.level_node([-0.5, -0.5, -0.5], 1e-6, 3), 0);
    // Walk the rule by hand for a sample in the present octant 7 and check the same answer.
    let p = [0.6, 0.1, 0.9];
    let mut node = 0usize;
    loop {
        let child = tree.nodes[node].children[child_index(&tree.nodes[node], p)];
        if child == NO_CHILD {
            break;
        }
        node = child as usize;
    }
    assert_eq!(tree.level_node(p, 1e-6, 3) as usize, node);
    assert!(tree.nodes[node].depth < 3, "this path stops at a missing child");
}

#[test]
fn child_index_bits() {
    let tree = Octree::root(16);
    let root = &tree.nodes[0];
    assert_eq!(child_index(root, [-0.5, -0.5, -0.5]), 0);
    assert_eq!(child_index(root, [0.5, -0.5, -0.5]), 1);
    assert_eq!(child_index(root, [-0.5, 0.5, -0.5]), 2);
    assert_eq!(child_index(root, [-0.5, -0.5, 0.5]), 4);
    assert_eq!(child_index(root, [0.0, 0.0, 0.0]), 7, "the centre belongs to the upper octant");
}

#[test]
fn sample_radius_jitter() {
    assert!((sample_radius(2.0, 0.01, 0.5) - 0.02).abs() < 1e-7);
    assert!((sample_radius(2.0, 0.01, 0.0) - 0.02 / 2f32.sqrt()).abs() < 1e-7);
    assert!((sample_radius(2.0, 0.01, 1.0) - 0.02 * 2f32.sqrt()).abs() < 1e-7);
}

#[test]
fn layout_json_round_trip() {
    let camera = look_at([0.95, 0.95, 0.95], [0.0; 3], 8.0, 64);
    let tree = Octree::build(&[camera], 3, 32);
    let json = tree.to_layout_json();
    let text = serde_json::to_string(&json).unwrap();
    let back = Octree::from_layout_json(&serde_json::from_str(&text).unwrap()).unwrap();
    assert_eq!(back, tree);
}

#[test]
fn malformed_layouts_are_errors() {
    let tree = Octree::full(1, 16);
    let good = tree.to_layout_json();
    let check = |edit: &dyn Fn(&mut serde_json::Value), expect: &str| {
        let mut v = good.clone();
        edit(&mut v);
        let err = Octree::from_layout_json(&v).expect_err(expect).to_string();
        assert!(err.contains(expect), "{err:?} should mention {expect:?}");
    };
    check(&|v| v["version"] = 99.into(), "version");
    check(&|v| v["nodes"] = serde_json::json!([]), "nodes");
    check(&|v| v["nodes"][3]["min"] = serde_json::json!([0.0, 1.0]), "node 3: min");
    check(&|v| v["nodes"][2]["edge"] = "big".into(), "node 2: edge");
    check(&|v| v["nodes"][0]["children"][5] = 99.into(), "node 0: children");
    check(&|v| v["nodes"][0]["children"][5] = 1.into(), "node 0: children");
    check(&|v| v["nodes"][4]["parent"] = 2.into(), "node 0: children");
    check(&|v| v["nodes"][4]["min"] = serde_json::json!([0.0, 0.0, 0.0]), "node 0: children");
    check(&|v| v["nodes"][0]["children"][7] = serde_json::Value::Null, "node 8: parent");
    check(&|v| v["nodes"][0]["edge"] = 3.0.into(), "node 0");
    check(&|v| v["nodes"][1]["depth"] = (-1).into(), "node 1: depth");
    check(&|v| v["nodes"][1]["children"] = serde_json::json!("none"), "node 1: children");
}

#[test]
fn view_depth_matches_brute_force_sampling() {
    // Deterministic LCG: random cameras and boxes, compared with a dense grid of box points.
    let mut state = 12345u64;
    let mut rand = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    for _ in 0..200 {
        let position = [0, 1, 2].map(|_| rand() * 6.0 - 3.0);
        let target = [0, 1, 2].map(|_| rand() * 2.0 - 1.0);
        let camera = look_at(position, target, 20.0 + rand() * 80.0, 64);
        let edge = 0.2 + rand();
        let min = [0, 1, 2].map(|_| rand() * 2.0 - 1.0);
        let n = 16;
        let mut nearest_seen = f32::INFINITY;
        for i in 0..=n {
            for j in 0..=n {
                for k in 0..=n {
                    let p = [i, j, k].map(|v| v as f32 / n as f32 * edge);
                    let p = [min[0] + p[0], min[1] + p[1], min[2] + p[2]];
                    let d = [p[0] - position[0], p[1] - position[1], p[2] - position[2]];
                    let r = camera.rotation;
                    let local = [0, 1, 2].map(|a| r[0][a] * d[0] + r[1][a] * d[1] + r[2][a] * d[2]);
                    let s = -local[2];
                    if s <= 0.0 {
                        continue;
                    }
                    let u = camera.cx + camera.fx * local[0] / s;
                    let v = camera.cy - camera.fy * local[1] / s;
                    if (0.0..=64.0).contains(&u) && (0.0..=64.0).contains(&v) {
                        nearest_seen = nearest_seen.min((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt());
                    }
                }
            }
        }
        let depth = view_depth(&camera, min, edge);
        if nearest_seen.is_finite() {
            let depth = depth.expect("a box with visible points is seen");
            assert!(depth <= nearest_seen + 1e-4, "{depth} > sampled {nearest_seen}");
            assert!(depth >= box_distance(position, min, edge) - 1e-4);
            assert!(depth >= nearest_seen - 2.0 * edge / n as f32, "{depth} far below sampled {nearest_seen}");
        }
    }
}
