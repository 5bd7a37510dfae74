// After each occupancy update: the grid's mean density. Samples are skipped only below
// min(threshold / delta, mean), so a young field whose densities are all small is not emptied.

var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) local: u32) {
    let cells = sampling.resolution * sampling.resolution * sampling.resolution;
    var acc = 0.0;
    for (var c = local; c < cells; c += WORKGROUP) {
        acc += occupancy[c];
    }
    partial[local] = acc;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if local < stride {
            partial[local] += partial[local + stride];
        }
        workgroupBarrier();
    }
    if local == 0u {
        occupancy_mean[0] = partial[0] / f32(cells);
    }
}
