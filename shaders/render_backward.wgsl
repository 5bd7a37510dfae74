// Pass 5: the render's backward. From dLoss/d(colour, opacity, depth) of each slot (the loss passes'
// sum) to dLoss/d(rgb, sigma) of each of its samples, by one front-to-back scan with
// C = sum_i w_i c_i + T_N bg, D = sum_i w_i t_i, O = 1 - T_N, w_i = T_i alpha_i:
//   dC/dc_i = w_i,
//   dC/dsigma_i = delta_i (T_{i+1} c_i - (C - sum_{j<=i} w_j c_j)),
//   dD/dsigma_i = delta_i (T_{i+1} t_i - (D - sum_{j<=i} w_j t_j)),
//   dO/dsigma_i = delta_i T_N.
// Where sigma * delta is clamped the gradient to sigma is 0. Non-finite results become 0, counted.
// The gradients are stored times the loss scale (mixed precision; 1 in f32), as GradRecords.

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let slot = flat_index(wg, nwg, local, WORKGROUP);
    if slot >= batch.n_rays * batch.n_cuts {
        return;
    }
    let n = batch.samples_per_ray;
    let first = slot * n;
    let out = outputs[slot];
    let g = ray_grads[slot];
    let t_final = 1.0 - out.opacity;
    let loss_scale = guard[G_LOSS_SCALE];
    var t = 1.0;
    var prefix_rgb = vec3<f32>(0.0);
    var prefix_depth = 0.0;
    var bad = 0u;
    for (var i = 0u; i < n; i++) {
        // skipped samples have no gradient
        if samples[first + i].node == NO_NODE {
            sample_grads[first + i] = GradRecord(vec4<f32>(0.0));
            continue;
        }
        let sample = samples[first + i];
        let f = field_out[first + i];
        let tau = f.w * sample.delta;
        let alpha = 1.0 - exp(-min(tau, MAX_TAU));
        let w = t * alpha;
        prefix_rgb += w * f.xyz;
        prefix_depth += w * sample.t;
        let t_next = t * (1.0 - alpha);
        var d_sigma = dot(g.rgb, t_next * f.xyz - (out.rgb - prefix_rgb));
        d_sigma += g.depth * (t_next * sample.t - (out.depth - prefix_depth));
        d_sigma += g.opacity * t_final;
        d_sigma *= sample.delta;
        if tau >= MAX_TAU {
            d_sigma = 0.0;
        }
        let grad = vec4<f32>(g.rgb * w, d_sigma);
        if any(vec4<bool>(nonfinite(grad.x), nonfinite(grad.y), nonfinite(grad.z), nonfinite(grad.w))) {
            bad += 1u;
        }
        let clean = vec4<f32>(sanitize(grad.x), sanitize(grad.y), sanitize(grad.z), sanitize(grad.w));
        sample_grads[first + i] = to_grad_record(clean * loss_scale);
        t = t_next;
    }
    if bad > 0u {
        atomicAdd(&sanitized[SANITIZED_RENDER], bad);
    }
}
