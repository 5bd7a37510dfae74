// Pass 7: adds this step's loss to a small statistics buffer that the host reads now and then.
// stats[0]: sum of per-step mean squared errors, stats[1]: steps summed, stats[2]: evaluated samples.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> results: array<RayResult>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;

var<workgroup> partial: array<f32, 256>;
var<workgroup> partial_active: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) local: u32) {
    var acc = 0.0;
    var evaluated = 0.0;
    for (var r = local; r < frame.n_rays; r += 256u) {
        acc += results[r].loss;
        evaluated += results[r].evaluated;
    }
    partial[local] = acc;
    partial_active[local] = evaluated;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if local < stride {
            partial[local] += partial[local + stride];
            partial_active[local] += partial_active[local + stride];
        }
        workgroupBarrier();
    }
    if local == 0u {
        stats[0] += partial[0] * frame.inv_count;
        stats[1] += 1.0;
        stats[2] += partial_active[0];
    }
}
