// Finishes sample s (its ray, t, delta and position set): skipped as empty space where the
// occupancy grid says so (node NO_NODE; only that field of the record is written, the render passes
// read nothing else of a skipped sample), but for a random few while training (sampling.explore),
// which keep regions the grid emptied too early learnable; else its octree node by footprint, capped
// at `cut`, and a rank among its node's samples, from which scatter.wgsl builds the node-sorted list
// the field passes run over. k numbers the sample's random streams.
fn place_sample(s: u32, placed: Sample, k: u32, cut: u32) {
    var sample = placed;
    if sampling.skip != 0u {
        let threshold = min(sampling.threshold / sample.delta, occupancy_mean[0]);
        let explore = batch.training != 0u && rand01(batch.seed, 22u, k) < sampling.explore;
        if occupancy[occupancy_cell(sample.pos, sampling.resolution)] < threshold && !explore {
            samples[s].node = NO_NODE;
            return;
        }
    }
    var v = 0.5;
    if batch.training != 0u {
        v = rand01(batch.seed, 21u, k);
    }
    let radius = sample.t * rays[sample.ray].pixel_radius * exp2(v - 0.5);
    sample.node = level_node(sample.pos, radius, cut);
    if sample.node != NO_NODE {
        sample.rank = atomicAdd(&node_counts[sample.node], 1u);
    }
    samples[s] = sample;
}
