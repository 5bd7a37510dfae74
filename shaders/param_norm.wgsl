// The parameter L2's value (SPEC §3.3): the sum of p^2 over one page of parameters, in NORM_PARTIALS
// partial sums (one per workgroup: a multi-workgroup reduction, each invocation a strided share, then
// a tree in workgroup memory). The host adds the partials of every page and divides by the model's
// parameter count when it reads the statistics, so the value costs nothing between those reads; its
// gradient is added by Adam (adam_update.wgsl).

var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    var sum = 0.0;
    for (var i = wg.x * WORKGROUP + local; i < page.n_params; i += NORM_PARTIALS * WORKGROUP) {
        let p = params[i];
        sum += p * p;
    }
    partial[local] = sum;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if local < stride {
            partial[local] += partial[local + stride];
        }
        workgroupBarrier();
    }
    if local == 0u {
        partials[page.index * NORM_PARTIALS + wg.x] = partial[0];
    }
}
