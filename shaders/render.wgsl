// Pass 4: volume rendering per ray (SPEC §2); in training also the MSE loss and its gradient with
// respect to every sample's (rgb, sigma), by a second front-to-back scan.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> rays: array<Ray>;
@group(0) @binding(2) var<storage, read> samples: array<Sample>;
@group(0) @binding(3) var<storage, read> field_out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> results: array<RayResult>;
@group(0) @binding(5) var<storage, read_write> sample_grads: array<vec4<f32>>;

// Optical depth sigma*delta is clamped so alpha never rounds to exactly 1 (SPEC §4).
const MAX_TAU: f32 = 30.0;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let r = flat_index(wg, nwg, local, 64u);
    if r >= frame.n_rays {
        return;
    }
    let n = frame.samples_per_ray;
    let base = r * n;
    var background = vec3<f32>(frame.background_r, frame.background_g, frame.background_b);
    if frame.training != 0u && frame.random_background != 0u {
        background = unpack_rgb(rays[r].background);
    }
    var transmittance = 1.0;
    var rgb = vec3<f32>(0.0);
    var depth = 0.0;
    var evaluated = 0u;
    for (var i = 0u; i < n; i++) {
        // skipped samples are empty space (alpha 0); of their record only the node is current
        if samples[base + i].node == NO_NODE {
            continue;
        }
        let sample = samples[base + i];
        let f = field_out[base + i];
        evaluated += 1u;
        let alpha = 1.0 - exp(-min(f.w * sample.delta, MAX_TAU));
        let w = transmittance * alpha;
        rgb += w * f.xyz;
        depth += w * sample.t;
        transmittance *= 1.0 - alpha;
    }
    let colour = rgb + transmittance * background;
    var result: RayResult;
    result.rgb = colour;
    result.opacity = 1.0 - transmittance;
    result.depth = depth;
    result.loss = 0.0;
    result.evaluated = f32(evaluated);
    if frame.training != 0u {
        let target_rgb = rays[r].target_rgb;
        let diff = colour - target_rgb.xyz;
        result.loss = dot(diff, diff) * target_rgb.w;
        let d_colour = 2.0 * diff * target_rgb.w * frame.inv_count;
        var t = 1.0;
        var prefix = vec3<f32>(0.0);
        for (var i = 0u; i < n; i++) {
            // skipped samples have no gradient
            if samples[base + i].node == NO_NODE {
                sample_grads[base + i] = vec4<f32>(0.0);
                continue;
            }
            let sample = samples[base + i];
            let f = field_out[base + i];
            let tau = f.w * sample.delta;
            let alpha = 1.0 - exp(-min(tau, MAX_TAU));
            let w = t * alpha;
            prefix += w * f.xyz;
            let t_next = t * (1.0 - alpha);
            // d colour / d sigma_i = delta_i * (T_{i+1} c_i - (colour - prefix_i))
            var d_sigma = dot(d_colour, t_next * f.xyz - (colour - prefix)) * sample.delta;
            if tau >= MAX_TAU {
                d_sigma = 0.0;
            }
            sample_grads[base + i] = vec4<f32>(d_colour * w, sanitize(d_sigma));
            t = t_next;
        }
    }
    results[r] = result;
}
