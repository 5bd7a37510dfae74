// Pass 2a (training, while a term on probes weighs more than 0): the step's probe groups, written as
// samples after the ray samples, so the node-batched field passes evaluate them with the rest and
// field_backward takes their gradients (loss_probes.wgsl) like any sample's. Group g has
// PROBES_PER_GROUP slots:
// - 0..7: a stencil in a child node, its centre and the centre +- h along x, y, z (h = the child's
//   gsd, the step Inf-NeRF's inter-level loss uses); 7..14: the same points in the child's parent.
//   Normal and density consistency compare the two nodes there (SPEC §3.2).
// - 14, 15: a point on a face two nodes of one depth share, in each of them (seam continuity,
//   SPEC §3.3).
// Both start from a random ray sample of the batch that the field evaluates (not skipped as empty
// space) in a node below the root: probes go where the rendering needs the field, not uniformly
// through the node's box as Inf-NeRF draws them (mostly empty space). The stencil is centred at the
// sample, moved inside the child by h so that its points stay in it; the seam point is the sample
// moved onto a random face of its node. Probes that find no source, no parent inside or no neighbour
// get node NO_NODE (not evaluated; loss_probes.wgsl skips their group).

// Random sample draws per group before it gives up (a batch with few evaluated samples).
const PROBE_TRIES: u32 = 4u;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let g = flat_index(wg, nwg, local, WORKGROUP);
    if g >= batch.probe_groups {
        return;
    }
    let ray_samples = batch.n_rays * batch.n_cuts * batch.samples_per_ray;
    let base = ray_samples + g * PROBES_PER_GROUP;
    // the chunk's first ray: every chunk of a step draws other sources
    let index = g + batch.ray_offset;
    var source = ray_samples;
    for (var t = 0u; t < PROBE_TRIES; t++) {
        let s = min(u32(rand01(batch.seed, 30u + t, index) * f32(ray_samples)), ray_samples - 1u);
        let node = samples[s].node;
        if node != NO_NODE && nodes[node].depth > 0u {
            source = s;
            break;
        }
    }
    let found = source < ray_samples;
    var from_sample: Sample;
    if found {
        from_sample = samples[source];
    }

    // the stencil
    if found && (batch.probe_kinds & 1u) != 0u {
        let child = nodes[from_sample.node];
        let h = child.gsd;
        let centre = min(max(from_sample.pos, child.min + vec3<f32>(h)), child.min + vec3<f32>(child.edge - h));
        for (var k = 0u; k < 7u; k++) {
            let p = centre + h * stencil_offset(k);
            write_probe(base + k, p, from_sample.node, h, from_sample.ray);
            write_probe(base + 7u + k, p, child.parent, h, from_sample.ray);
        }
    } else {
        for (var k = 0u; k < 14u; k++) {
            samples[base + k].node = NO_NODE;
        }
    }

    // the seam
    var neighbour = NO_NODE;
    var face_point = vec3<f32>(0.0);
    if found && (batch.probe_kinds & 2u) != 0u {
        let node = nodes[from_sample.node];
        let axis = min(u32(rand01(batch.seed, 34u, index) * 3.0), 2u);
        let upper = rand01(batch.seed, 35u, index) < 0.5;
        face_point = from_sample.pos;
        face_point[axis] = node.min[axis] + select(0.0, node.edge, upper);
        // a point a quarter of an edge past the face finds the node on the other side
        var beyond = face_point;
        beyond[axis] += select(-0.25, 0.25, upper) * node.edge;
        if abs(beyond[axis]) < 1.0 {
            // the descent to the node's depth (a radius of 0 is finer than any node)
            let other = level_node(beyond, 0.0, node.depth);
            if nodes[other].depth == node.depth {
                neighbour = other;
            }
        }
    }
    if neighbour != NO_NODE {
        let h = nodes[from_sample.node].gsd;
        write_probe(base + 14u, face_point, from_sample.node, h, from_sample.ray);
        write_probe(base + 15u, face_point, neighbour, h, from_sample.ray);
    } else {
        samples[base + 14u].node = NO_NODE;
        samples[base + 15u].node = NO_NODE;
    }
}

// Stencil point k: 0 the centre, then -x, +x, -y, +y, -z, +z (unit steps).
fn stencil_offset(k: u32) -> vec3<f32> {
    var o = vec3<f32>(0.0);
    if k > 0u {
        o[(k - 1u) / 2u] = select(-1.0, 1.0, (k & 1u) == 0u);
    }
    return o;
}

// A probe: evaluated at `pos` by `node`, seen along the source's ray (the colour's direction); delta
// holds the step h its loss uses.
fn write_probe(slot: u32, pos: vec3<f32>, node: u32, h: f32, ray: u32) {
    var probe: Sample;
    probe.pos = pos;
    probe.node = node;
    probe.t = 0.0;
    probe.delta = h;
    probe.ray = ray;
    probe.rank = atomicAdd(&node_counts[node], 1u);
    samples[slot] = probe;
}
