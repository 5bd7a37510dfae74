// Adds this step's numbers to a small statistics buffer the host reads now and then (STATS_WORDS
// floats): [0] batches summed, [1] evaluated samples, [2] the weighted loss the optimiser saw (each
// term's lambda times its cut's level weight, at this step's settings), then per loss term t and cut c,
// at 3 + t * MAX_CUTS + c, the term's mean over that cut's rays, then per cut slot c, at
// STATS_CUT_BATCHES + c, the batches that rendered it. The weighted loss is also added to
// the guard's loss of this step (grad_guard.wgsl reads and clears it). One workgroup.

var<workgroup> partial: array<array<f32, STATS_WORDS>, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) local: u32) {
    var acc: array<f32, STATS_WORDS>;
    let n_slots = batch.n_rays * batch.n_cuts;
    // cut and term loops of constant length, outside the loop over rays: every index into `acc` is
    // then a constant, so it lives in registers (indexed per ray, it went through memory: 20 times
    // slower on a CPU device)
    for (var c = 0u; c < MAX_CUTS; c++) {
        if c >= batch.n_cuts {
            break;
        }
        for (var t = 0u; t < LOSS_TERMS; t++) {
            let level = select(1.0, loss.cut_weights[c], ((PER_CUT_TERMS >> t) & 1u) != 0u);
            let weight = loss.lambdas[t / 4u][t % 4u] * level;
            var sum = 0.0;
            for (var r = local; r < batch.n_rays; r += WORKGROUP) {
                sum += losses[t * n_slots + c * batch.n_rays + r];
            }
            acc[2] += weight * sum;
            acc[3u + t * MAX_CUTS + c] += sum;
        }
    }
    for (var slot = local; slot < n_slots; slot += WORKGROUP) {
        acc[1] += outputs[slot].evaluated;
    }
    partial[local] = acc;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if local < stride {
            for (var k = 1u; k < STATS_WORDS; k++) {
                partial[local][k] += partial[local + stride][k];
            }
        }
        workgroupBarrier();
    }
    if local == 0u {
        stats[0] += 1.0;
        for (var c = 0u; c < batch.n_cuts; c++) {
            stats[STATS_CUT_BATCHES + c] += 1.0;
        }
        guard[G_STEP_LOSS] += partial[0][2];
        for (var k = 1u; k < STATS_WORDS; k++) {
            stats[k] += partial[0][k];
        }
    }
}
