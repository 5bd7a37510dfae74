// After each occupancy update: the grid's mean density. Samples are skipped only below
// min(threshold / delta, mean), so a young field whose densities are all small is not emptied.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(6) var<storage, read> occupancy: array<f32>;
@group(0) @binding(7) var<storage, read_write> occupancy_mean: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) local: u32) {
    let cells = frame.occ_resolution * frame.occ_resolution * frame.occ_resolution;
    var acc = 0.0;
    for (var c = local; c < cells; c += 256u) {
        acc += occupancy[c];
    }
    partial[local] = acc;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if local < stride {
            partial[local] += partial[local + stride];
        }
        workgroupBarrier();
    }
    if local == 0u {
        occupancy_mean[0] = partial[0] / f32(cells);
    }
}
