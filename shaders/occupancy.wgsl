// Occupancy-grid update (SPEC §5): a cell takes the density at a random point inside it, from the
// deepest node there, and keeps the maximum of that and its decayed old value. Each update visits one
// of OCC_PHASES interleaved subsets of the cells (frame.occ_phase picks which), to spread the cost.
// Dispatched once per node over the cells of this phase that lie in it (listed once by the host: the
// grid's cells never straddle a node), with the node's decoders bound as `decoder`.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(6) var<storage, read_write> occupancy: array<f32>;
// the cells, sorted by phase then node
@group(0) @binding(7) var<storage, read> occ_cells: array<u32>;
// per phase and node: (first index in occ_cells, count)
@group(0) @binding(8) var<storage, read> occ_ranges: array<vec2<u32>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let range = occ_ranges[frame.occ_phase * frame.n_nodes + decoder.node];
    let k = flat_index(wg, nwg, local, 64u);
    if k >= range.y {
        return;
    }
    let cell = occ_cells[range.x + k];
    let res = frame.occ_resolution;
    let c = vec3<u32>(cell % res, (cell / res) % res, cell / (res * res));
    let jitter = vec3<f32>(rand01(frame.seed, 30u, cell), rand01(frame.seed, 31u, cell), rand01(frame.seed, 32u, cell));
    let pos = (vec3<f32>(c) + jitter) * (2.0 / f32(res)) - vec3<f32>(1.0);
    let sigma = sanitize(field_density(decoder.node * NODE_PARAMS, node_local(nodes[decoder.node], pos)));
    occupancy[cell] = max(occupancy[cell] * frame.occ_decay, sigma);
}
