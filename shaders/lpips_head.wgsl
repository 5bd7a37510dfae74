// LPIPS's linear heads and their backward: one invocation per render and position of the largest
// feature tensor. At each of the five feature layers where the position exists, the render's and
// its target's features are normalised over the channels, n = f / (|f| + eps) (eps = 1e-10, as
// LPIPS), and
//   d = sum_c head_c (n_c - m_c)^2 / positions of the layer
// is the layer's share at this position (summed over the layers into `values`). Its gradient to the
// render's features,
//   dd/df_j = g_j / (|f| + eps) - f_j (g . f) / (|f| (|f| + eps)^2),  g_c = 2 head_c (n_c - m_c) / positions,
// is written to their `act_grads` (every position of every feature tensor of a render is one
// invocation's, so the backward's stages add to a complete gradient).

const EPS: f32 = 1e-10;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let index = flat_index(wg, nwg, local, WORKGROUP);
    let renders = lpips.n_cuts * lpips.squares;
    if index >= renders * lpips.positions {
        return;
    }
    let image = index / lpips.positions;
    let p = index % lpips.positions;
    let target_image = renders + image % lpips.squares;
    var value = 0.0;
    for (var l = 0u; l < 5u; l++) {
        let layer = lpips.features[l];
        let channels = layer.y;
        let area = layer.z * layer.z;
        if p >= area {
            continue;
        }
        let f = layer.x + image * channels * area + p;
        let t = layer.x + target_image * channels * area + p;
        var ff = 0.0;
        var tt = 0.0;
        for (var c = 0u; c < channels; c++) {
            let a = acts[f + c * area];
            let b = acts[t + c * area];
            ff += a * a;
            tt += b * b;
        }
        let norm_f = sqrt(ff);
        let sf = norm_f + EPS;
        let st = sqrt(tt) + EPS;
        let inv_area = 1.0 / f32(area);
        var d = 0.0;
        var g_dot_f = 0.0;
        for (var c = 0u; c < channels; c++) {
            let a = acts[f + c * area];
            let u = a / sf - acts[t + c * area] / st;
            let w = weights[layer.w + c];
            d += w * u * u;
            g_dot_f += 2.0 * w * u * inv_area * a;
        }
        value += d * inv_area;
        var radial = 0.0;
        if norm_f > 0.0 {
            radial = g_dot_f / (norm_f * sf * sf);
        }
        for (var c = 0u; c < channels; c++) {
            let a = acts[f + c * area];
            let u = a / sf - acts[t + c * area] / st;
            let g = 2.0 * weights[layer.w + c] * u * inv_area;
            act_grads[f + c * area] = g / sf - a * radial;
        }
    }
    values[index] = value;
}
