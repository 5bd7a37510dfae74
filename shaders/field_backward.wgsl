// Pass 5: gradients of the loss with respect to every node's parameters, over the active samples.
// Dispatched once per node, like the forward. The forward is recomputed per sample (no stored
// activations). Decoder weight gradients are summed over the workgroup's samples in workgroup memory
// first (the generated reduce_* functions), one atomic per weight per workgroup; hash-table gradients
// are scattered with one atomic per corner and feature.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> rays: array<Ray>;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(3) var<storage, read> samples: array<Sample>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read> sample_grads: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> active_list: array<u32>;

// 1 where the workgroup's sample has a gradient
var<workgroup> wg_use: array<u32, WG_BACKWARD>;
var<workgroup> wg_in: array<f32, WG_IN_SIZE>;
var<workgroup> wg_delta: array<vec4<f32>, WG_DELTA_SIZE>;
// set when any sample of the workgroup has a gradient (workgroup memory starts zeroed)
var<workgroup> wg_active: u32;

@compute @workgroup_size(WG_BACKWARD)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let k = flat_index(wg, nwg, local, WG_BACKWARD);
    var used = false;
    var a: Acts;
    var d_out4 = vec3<f32>(0.0);
    var d_pre3: array<f32, HIDDEN>;
    var d_out1: array<f32, OUT1>;
    var d_pre1: array<f32, HIDDEN>;
    var base = 0u;
    var local_pos = vec3<f32>(0.0);
    if k < decoder.count {
        let s = active_list[decoder.list_offset + k];
        let sample = samples[s];
        let g = sample_grads[s];
        if any(g != vec4<f32>(0.0)) {
            used = true;
            base = decoder.node * NODE_PARAMS;
            local_pos = node_local(nodes[decoder.node], sample.pos);
            a = field_eval(base, local_pos, rays[sample.ray].dir);
            d_out4 = g.xyz * a.rgb * (vec3<f32>(1.0) - a.rgb);
            d_pre3 = colour_out_back(array<f32, RGB>(d_out4.x, d_out4.y, d_out4.z), a.pre3);
            let d_geo = colour_hidden_back(d_pre3);
            // density: d sigma / d raw is sigma (exp activation; the clamps pass the gradient straight through)
            d_out1[0] = g.w * a.sigma;
            for (var k = 0u; k < GEO; k++) {
                d_out1[k + 1u] = d_geo[k];
            }
            d_pre1 = density_out_back(d_out1, a.pre1);
        }
    }
    wg_use[local] = u32(used);
    if used {
        wg_active = 1u;
    }
    // workgroups of skipped (empty-space) samples only: nothing to reduce
    if workgroupUniformLoad(&wg_active) == 0u {
        return;
    }

    // each layer's weight gradients: inputs and output gradients staged in workgroup memory, then summed
    stage_colour_out(local, a.pre3, array<f32, RGB>(d_out4.x, d_out4.y, d_out4.z));
    workgroupBarrier();
    reduce_colour_out(local);
    workgroupBarrier();
    stage_colour_hidden(local, a.in3, d_pre3);
    workgroupBarrier();
    reduce_colour_hidden(local);
    workgroupBarrier();
    stage_density_out(local, a.pre1, d_out1);
    workgroupBarrier();
    reduce_density_out(local);
    workgroupBarrier();
    stage_density_hidden(local, a.in1, d_pre1);
    workgroupBarrier();
    reduce_density_hidden(local);

    // hash tables: scatter d(encoding) to the 8 corners of each level's cell
    if used {
        let d_in1 = density_hidden_back(d_pre1);
        for (var l = 0u; l < HASH_LEVELS; l++) {
            let d0 = d_in1[2u * l];
            let d1 = d_in1[2u * l + 1u];
            let cell = grid_cell(l, local_pos);
            let f = clamp(local_pos, vec3<f32>(0.0), vec3<f32>(1.0)) * f32(cell.w) - vec3<f32>(cell.xyz);
            for (var c = 0u; c < 8u; c++) {
                let w = corner_weight(c, f);
                let idx = base + hash_index(l, cell.xyz + corner_offset(c));
                grad_add(idx, w * d0);
                grad_add(idx + 1u, w * d1);
            }
        }
    }
}
