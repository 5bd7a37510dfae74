// Pass 7b (SPEC §4), one workgroup of GRAD_SLOTS invocations, between the gradient statistics and Adam:
// sums the slots of grad_norm (a tree in workgroup memory: the last stage of a multi-workgroup
// reduction) into the global norm and each tensor's norm, mean, deviation and largest magnitude, and
// decides what Adam does with this step's gradient:
// - an anomaly (the detector on, `guard.sigma` > 0): a loss or gradient entry that is not finite (the
//   count grad_stats keeps), or a loss or norm that lies more
//   than sigma standard deviations above the mean of the last `window` accepted steps and at least
//   `min_ratio` times that mean (stability.anomaly_min_ratio says why). The step is
//   skipped (Adam drops the gradient) and the value is kept out of the history. After `window`
//   anomalies in a row the history starts again (a lasting change is then the new normal); the host
//   restores its last snapshot sooner (stability.restore_after).
// - otherwise the values join the history, and a norm above `guard.clip` (when positive) scales the
//   gradient down to it.
// The counters "since the read" are cleared by the host when it reads the statistics.

var<workgroup> part: array<array<f32, GRAD_SLOT_WORDS>, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_index) local: u32) {
    for (var k = 0u; k < GRAD_SLOT_WORDS; k++) {
        part[local][k] = grad_partials[local * GRAD_SLOT_WORDS + k];
        grad_partials[local * GRAD_SLOT_WORDS + k] = 0.0;
    }
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if local < stride {
            for (var k = 0u; k < GRAD_SLOT_WORDS; k++) {
                part[local][k] += part[local + stride][k];
            }
        }
        workgroupBarrier();
    }
    if local == 0u {
        decide();
    }
}

fn decide() {
    // the gradients carry the loss scale (1 in f32): the statistics are of the true gradient
    let loss_scale = guard[G_LOSS_SCALE];
    let unscale = 1.0 / loss_scale;
    var total = 0.0;
    for (var t = 0u; t < GRAD_TENSORS; t++) {
        let sum_sq = part[0][3u * t] * unscale * unscale;
        let n = max(part[0][3u * t + 2u], 1.0);
        let mean = part[0][3u * t + 1u] * unscale / n;
        guard[G_TENSORS + 4u * t] = sqrt(sum_sq);
        guard[G_TENSORS + 4u * t + 1u] = mean;
        guard[G_TENSORS + 4u * t + 2u] = sqrt(max(sum_sq / n - mean * mean, 0.0));
        guard[G_TENSORS + 4u * t + 3u] = bitcast<f32>(grad_max[t]) * unscale;
        grad_max[t] = 0u;
        total += sum_sq;
    }
    let norm = sqrt(total);
    let nonfinite_grads = grad_max[GRAD_TENSORS];
    grad_max[GRAD_TENSORS] = 0u;
    let loss = guard[G_STEP_LOSS];
    guard[G_STEP_LOSS] = 0.0;
    guard[G_STEPS] += 1.0;
    guard[G_NORM] = norm;
    guard[G_LOSS] = loss;
    // dynamic loss scaling (mixed precision; stability::LossScaler is the reference): a non-finite
    // gradient is an overflow of the scaled f16 gradients, which halves the scale and skips the step;
    // at scale 1 it is an anomaly like any other. Steps without one count towards doubling it.
    if HALF {
        if (nonfinite_grads > 0u || nonfinite(norm)) && loss_scale > 1.0 {
            guard[G_LOSS_SCALE] = max(loss_scale * 0.5, 1.0);
            guard[G_CLEAN_STEPS] = 0.0;
            guard[G_OVERFLOWS] += 1.0;
            guard[G_SKIP] = 1.0;
            guard[G_SKIPPED] += 1.0;
            return;
        }
        var clean = guard[G_CLEAN_STEPS] + 1.0;
        if clean >= f32(settings.growth_steps) {
            guard[G_LOSS_SCALE] = min(loss_scale * 2.0, MAX_LOSS_SCALE);
            clean = 0.0;
        }
        guard[G_CLEAN_STEPS] = clean;
    }
    let window = clamp(settings.window, 2u, MAX_ANOMALY_WINDOW);
    let filled = u32(guard[G_FILLED]);
    // 0: none, else the counter of its kind
    var anomaly = 0u;
    if settings.sigma > 0.0 {
        if nonfinite_grads > 0u || nonfinite(norm) || nonfinite(loss) {
            anomaly = G_ANOMALY_NONFINITE;
        } else if filled >= window && spike(G_HISTORY, loss, window) {
            anomaly = G_ANOMALY_LOSS;
        } else if filled >= window && spike(G_HISTORY + MAX_ANOMALY_WINDOW, norm, window) {
            anomaly = G_ANOMALY_GRAD;
        }
    }
    if !nonfinite(norm) {
        guard[G_NORM_SUM] += norm;
    }
    if anomaly != 0u {
        guard[anomaly] += 1.0;
        guard[G_SKIP] = 1.0;
        guard[G_SKIPPED] += 1.0;
        let run = guard[G_RUN] + 1.0;
        guard[G_MAX_RUN] = max(guard[G_MAX_RUN], run);
        if u32(run) >= window {
            guard[G_FILLED] = 0.0;
            guard[G_NEXT] = 0.0;
            guard[G_RUN] = 0.0;
        } else {
            guard[G_RUN] = run;
        }
        return;
    }
    guard[G_SKIP] = 0.0;
    guard[G_RUN] = 0.0;
    let next = u32(guard[G_NEXT]) % window;
    guard[G_HISTORY + next] = loss;
    guard[G_HISTORY + MAX_ANOMALY_WINDOW + next] = norm;
    guard[G_NEXT] = f32((next + 1u) % window);
    guard[G_FILLED] = f32(min(filled + 1u, window));
    var scale = 1.0;
    if settings.clip > 0.0 && norm > settings.clip && !nonfinite(norm) {
        scale = settings.clip / norm;
        guard[G_CLIPPED] += 1.0;
    }
    guard[G_SCALE] = scale * unscale;
}

// Whether `x` lies more than sigma deviations above the mean of the history at `first`, and at
// least min_ratio times the mean.
fn spike(first: u32, x: f32, window: u32) -> bool {
    var mean = 0.0;
    for (var k = 0u; k < window; k++) {
        mean += guard[first + k];
    }
    mean /= f32(window);
    var var_sum = 0.0;
    for (var k = 0u; k < window; k++) {
        let d = guard[first + k] - mean;
        var_sum += d * d;
    }
    return x > mean + settings.sigma * sqrt(var_sum / f32(window)) && x >= settings.min_ratio * mean;
}
