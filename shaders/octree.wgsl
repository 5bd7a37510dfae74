// The octree as the kernels see it (`nodes`, the Node struct of src/octree.rs), and the per-sample
// level choice (SPEC §1). Mirrors Octree::level_node exactly.

fn child_slot(node: Node, p: vec3<f32>) -> u32 {
    let centre = node.min + vec3<f32>(0.5 * node.edge);
    return select(0u, 1u, p.x >= centre.x) | select(0u, 2u, p.y >= centre.y) | select(0u, 4u, p.z >= centre.z);
}

// Descend from the root into the child holding p while the sample is finer than the node (radius < gsd),
// the child exists (a missing child is not empty space) and the cut allows it.
fn level_node(p: vec3<f32>, radius: f32, cut: u32) -> u32 {
    var index = 0u;
    loop {
        let node = nodes[index];
        if node.depth >= cut || radius >= node.gsd {
            break;
        }
        let child = node.children[child_slot(node, p)];
        if child == NO_NODE {
            break;
        }
        index = child;
    }
    return index;
}

fn node_local(node: Node, pos: vec3<f32>) -> vec3<f32> {
    return (pos - node.min) / node.edge;
}
