// Pass 6: gradients of the loss with respect to the parameters, over the active samples. Dispatched
// like the forward (one dispatch per parameter page, a node per workgroup). The forward is recomputed
// per sample, or with STORE_ACTS read from what field_forward stored (train.recompute_backward =
// false). Decoder weight gradients are summed over the workgroup's samples in workgroup memory first
// (the generated reduce_* functions: loops on a GPU, written out sample by sample on a CPU adapter,
// see src/gpu/unrolled.rs), one atomic per weight per workgroup; hash-table gradients are scattered
// with one atomic per corner and feature. Adam finds the entries with a gradient again from the
// samples (adam_nodes.wgsl); when a step runs in several chunks, every block of ADAM_BLOCK parameters
// with a gradient is flagged in `touched` instead.

// 1 where the workgroup's sample has a gradient
var<workgroup> wg_use: array<u32, WORKGROUP>;
var<workgroup> wg_in: array<f32, WG_IN_SIZE>;
var<workgroup> wg_delta: array<vec4<f32>, WG_DELTA_SIZE>;
// set when any sample of the workgroup has a gradient (workgroup memory starts zeroed)
var<workgroup> wg_active: u32;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let group = node_group(wg, nwg);
    let node = group.x;
    let base = (node - page.first_node) * NODE_PARAMS;
    let wm = base + HASH_PARAMS;
    load_weights(local, wm);
    let p = group.y + min(local, max(group.z, 1u) - 1u);
    let s = active_list[p];
    let sample = samples[s];
    // times the loss scale: so are the parameter gradients (grad_guard takes it out for Adam)
    let g = vec4<f32>(sample_grads[s]);
    let used = local < group.z && any(g != vec4<f32>(0.0));
    let local_pos = node_local(nodes[node], sample.pos);
    // every lane evaluates (lanes without a gradient stage zeros): the weight loads stay uniform
    var a: Acts;
    if STORE_ACTS {
        a = load_acts(p, rays[sample.ray].dir);
    } else {
        a = field_eval(base, local_pos, rays[sample.ray].dir);
    }
    let gu = select(vec4<f32>(0.0), g, used);
    let d_out4 = gu.xyz * a.rgb * (vec3<f32>(1.0) - a.rgb);
    let d_pre3 = colour_out_back(array<f32, RGB>(d_out4.x, d_out4.y, d_out4.z), a.pre3, wm);
    let d_geo = colour_hidden_back(d_pre3, wm);
    // density: d sigma / d raw is sigma (exp activation; the clamps pass the gradient straight through)
    var d_out1: array<f32, OUT1>;
    d_out1[0] = gu.w * a.sigma;
    for (var k = 0u; k < GEO; k++) {
        d_out1[k + 1u] = d_geo[k];
    }
    let d_pre1 = density_out_back(d_out1, a.pre1, wm);
    wg_use[local] = u32(used);
    if used {
        wg_active = 1u;
    }
    // workgroups of samples without gradient only: nothing to reduce (the written-out sums of a CPU
    // adapter must follow no branch, see src/gpu/unrolled.rs: they add zeros there)
    if !SUMS_WRITTEN_OUT {
        if workgroupUniformLoad(&wg_active) == 0u {
            return;
        }
    }

    // each layer's weight gradients: inputs and output gradients staged in workgroup memory, then summed
    stage_colour_out(local, a.pre3, array<f32, RGB>(d_out4.x, d_out4.y, d_out4.z));
    workgroupBarrier();
    reduce_colour_out(local, base, group.z);
    workgroupBarrier();
    stage_colour_hidden(local, a.in3, d_pre3);
    workgroupBarrier();
    reduce_colour_hidden(local, base, group.z);
    workgroupBarrier();
    stage_density_out(local, a.pre1, d_out1);
    workgroupBarrier();
    reduce_density_out(local, base, group.z);
    workgroupBarrier();
    stage_density_hidden(local, a.in1, d_pre1);
    workgroupBarrier();
    reduce_density_hidden(local, base, group.z);
    // a step in chunks: Adam visits the flagged blocks (adam_blocks.wgsl), these decoders' among them
    if FLAG_BLOCKS {
        for (var b = wm / ADAM_BLOCK + local; b <= (base + NODE_PARAMS - 1u) / ADAM_BLOCK; b += WORKGROUP) {
            touched[b] = 1u;
        }
    }

    // hash tables: scatter d(encoding) to the 8 corners of each level's cell
    if used {
        let d_in1 = density_hidden_back(d_pre1, wm);
        for (var l = 0u; l < HASH_LEVELS; l++) {
            let d0 = d_in1[2u * l];
            let d1 = d_in1[2u * l + 1u];
            let cell = grid_cell(l, local_pos);
            let f = clamp(local_pos, vec3<f32>(0.0), vec3<f32>(1.0)) * f32(cell.w) - vec3<f32>(cell.xyz);
            for (var c = 0u; c < 8u; c++) {
                let w = corner_weight(c, f);
                let idx = base + hash_index(l, cell.xyz + corner_offset(c));
                grads_add(idx, w * d0);
                grads_add(idx + 1u, w * d1);
                // a feature pair may straddle two blocks (a node's block may start at an odd offset)
                if FLAG_BLOCKS {
                    touched[idx / ADAM_BLOCK] = 1u;
                    touched[(idx + 1u) / ADAM_BLOCK] = 1u;
                }
            }
        }
    }
}
