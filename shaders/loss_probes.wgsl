// Losses on the probes (probes.wgsl), after field_forward: per probe group, its value per term and
// dLoss/d(rgb, sigma) of each of its probes, which field_backward turns into parameter gradients.
// Each term is the mean over the step's probe groups (loss.inv_probes) times its weight; a group
// whose probes were not made (node NO_NODE) adds 0. Values go to the group's slot g of cut 0 in
// `losses` (probe_groups <= n_rays). Densities are compared as opacities over the step h,
// a = 1 - exp(-sigma h): bounded, and the parent's transmittance 1 - a is what Inf-NeRF compares.
//
// - density_consistency (Inf-NeRF's inter-level loss): (mean of the child's 7 stencil opacities -
//   the parent's at the centre)^2.
// - normal_consistency: 1 - n_child . n_parent, where n = g / sqrt(|g|^2 + eps^2) and g the central
//   differences of the opacity over the stencil (the density's gradient direction, up to a positive
//   factor). Central differences, not the field's analytic gradient: their backward is the ordinary
//   field backward at six more points (the analytic gradient's would need the hash encoding's second
//   derivatives), and at the scale h they measure the same thing the renderer resolves. eps keeps
//   the unit vector smooth where the density is flat (empty space, inside matter): there n ~ g / eps
//   is short and the term weighs little, instead of aligning noise at full strength.
// - seam: (a_1 - a_2)^2 + (a_1 + a_2) / 2 x |rgb_1 - rgb_2|^2 / 3 at a point of a face two nodes of
//   one depth share: opacity always, colour as much as there is matter to see it.

const NORMAL_EPSILON: f32 = 0.05;

fn opacity(sigma: f32, h: f32) -> f32 {
    return 1.0 - exp(-sigma * h);
}

// d opacity / d sigma
fn opacity_slope(sigma: f32, h: f32) -> f32 {
    return h * exp(-sigma * h);
}

// The soft unit vector of g and its scale sqrt(|g|^2 + eps^2).
fn soft_normal(g: vec3<f32>) -> vec4<f32> {
    let s = sqrt(dot(g, g) + NORMAL_EPSILON * NORMAL_EPSILON);
    return vec4<f32>(g / s, s);
}

// d(1 - n . m)/d g for n = soft_normal(g): -(m - n (n . m)) / s.
fn soft_normal_back(n: vec4<f32>, m: vec3<f32>) -> vec3<f32> {
    return -(m - n.xyz * dot(n.xyz, m)) / n.w;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let g = flat_index(wg, nwg, local, WORKGROUP);
    if g >= batch.probe_groups {
        return;
    }
    let n_slots = batch.n_rays * batch.n_cuts;
    let base = n_slots * batch.samples_per_ray + g * PROBES_PER_GROUP;
    var d_sigma: array<f32, PROBES_PER_GROUP>;
    var d_rgb_a = vec3<f32>(0.0);
    var value_density = 0.0;
    var value_normal = 0.0;
    var value_seam = 0.0;

    if samples[base].node != NO_NODE {
        let h = samples[base].delta;
        var a: array<f32, 14>;
        for (var k = 0u; k < 14u; k++) {
            a[k] = opacity(field_out[base + k].w, h);
        }
        var d_a: array<f32, 14>;
        // density: the child's mean opacity over the stencil against the parent's at the centre
        let lambda_density = term_lambda(TERM_DENSITY_CONSISTENCY);
        var mean = 0.0;
        for (var k = 0u; k < 7u; k++) {
            mean += a[k];
        }
        mean /= 7.0;
        let e = mean - a[7];
        value_density = e * e;
        for (var k = 0u; k < 7u; k++) {
            d_a[k] = lambda_density * 2.0 * e / 7.0;
        }
        d_a[7] = -lambda_density * 2.0 * e;
        // normals: the two nodes' opacity gradients by central differences
        let lambda_normal = term_lambda(TERM_NORMAL_CONSISTENCY);
        let child = soft_normal(vec3<f32>(a[2] - a[1], a[4] - a[3], a[6] - a[5]));
        let parent = soft_normal(vec3<f32>(a[9] - a[8], a[11] - a[10], a[13] - a[12]));
        value_normal = 1.0 - dot(child.xyz, parent.xyz);
        let d_child = lambda_normal * soft_normal_back(child, parent.xyz);
        let d_parent = lambda_normal * soft_normal_back(parent, child.xyz);
        for (var axis = 0u; axis < 3u; axis++) {
            d_a[2u + 2u * axis] += d_child[axis];
            d_a[1u + 2u * axis] -= d_child[axis];
            d_a[9u + 2u * axis] += d_parent[axis];
            d_a[8u + 2u * axis] -= d_parent[axis];
        }
        for (var k = 0u; k < 14u; k++) {
            d_sigma[k] = d_a[k] * opacity_slope(field_out[base + k].w, h);
        }
    }

    if samples[base + 14u].node != NO_NODE {
        let h = samples[base + 14u].delta;
        let f1 = field_out[base + 14u];
        let f2 = field_out[base + 15u];
        let a1 = opacity(f1.w, h);
        let a2 = opacity(f2.w, h);
        let d = f1.xyz - f2.xyz;
        let c = dot(d, d) / 3.0;
        let m = 0.5 * (a1 + a2);
        value_seam = (a1 - a2) * (a1 - a2) + m * c;
        let lambda_seam = term_lambda(TERM_SEAM);
        d_sigma[14] = lambda_seam * (2.0 * (a1 - a2) + 0.5 * c) * opacity_slope(f1.w, h);
        d_sigma[15] = lambda_seam * (-2.0 * (a1 - a2) + 0.5 * c) * opacity_slope(f2.w, h);
        d_rgb_a = lambda_seam * m * 2.0 * d / 3.0;
    }

    let scale = loss.inv_probes;
    // the gradients are stored times the loss scale (mixed precision), as render_backward's
    let grad_scale = scale * guard[G_LOSS_SCALE];
    for (var k = 0u; k < PROBES_PER_GROUP; k++) {
        var rgb = vec3<f32>(0.0);
        if k == 14u {
            rgb = d_rgb_a;
        } else if k == 15u {
            rgb = -d_rgb_a;
        }
        sample_grads[base + k] = to_grad_record(vec4<f32>(rgb, d_sigma[k]) * grad_scale);
    }
    losses[TERM_DENSITY_CONSISTENCY * n_slots + g] = value_density * scale;
    losses[TERM_NORMAL_CONSISTENCY * n_slots + g] = value_normal * scale;
    losses[TERM_SEAM * n_slots + g] = value_seam * scale;
}

// Term t's weight at this step (lambda x schedule x balancer).
fn term_lambda(term: u32) -> f32 {
    return loss.lambdas[term / 4u][term % 4u];
}
