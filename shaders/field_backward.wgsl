// Pass 5: gradients of the loss with respect to every node's parameters, over the active samples.
// The forward is recomputed per sample (no stored activations). Decoder weight gradients are summed
// over the workgroup's samples in workgroup memory first, one atomic per weight per run of samples
// that share a node (samples of a ray are contiguous, so runs are long); hash-table gradients are
// scattered with one atomic per corner and feature.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read> rays: array<Ray>;
@group(0) @binding(2) var<storage, read> nodes: array<Node>;
@group(0) @binding(3) var<storage, read> samples: array<Sample>;
@group(0) @binding(4) var<storage, read> params: array<f32>;
@group(0) @binding(5) var<storage, read> sample_grads: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> active_list: array<u32>;
@group(0) @binding(7) var<storage, read> active_count: array<u32>;

var<workgroup> wg_node: array<u32, WG_BACKWARD>;
var<workgroup> wg_in: array<f32, WG_IN_SIZE>;
var<workgroup> wg_delta: array<f32, WG_DELTA_SIZE>;
// set when any sample of the workgroup has a gradient (workgroup memory starts zeroed)
var<workgroup> wg_active: u32;

// dL/dW[o][i] = sum over the workgroup's samples of delta[o] * input[i] (input n_in is the bias' 1).
fn reduce_layer(local: u32, n_out: u32, n_in: u32, off_w: u32, off_b: u32) {
    let n_weights = n_out * (n_in + 1u);
    for (var w = local; w < n_weights; w += WG_BACKWARD) {
        let o = w / (n_in + 1u);
        let i = w % (n_in + 1u);
        var param = off_b + o;
        if i < n_in {
            param = off_w + o * n_in + i;
        }
        var current = NO_NODE;
        var acc = 0.0;
        for (var s = 0u; s < WG_BACKWARD; s++) {
            let node = wg_node[s];
            // samples without gradient do not break a run
            if node == NO_NODE {
                continue;
            }
            if node != current {
                if current != NO_NODE {
                    grad_add(current * NODE_PARAMS + param, acc);
                }
                current = node;
                acc = 0.0;
            }
            var x = 1.0;
            if i < n_in {
                x = wg_in[s * MAX_IN + i];
            }
            acc += wg_delta[s * MAX_OUT + o] * x;
        }
        if current != NO_NODE {
            grad_add(current * NODE_PARAMS + param, acc);
        }
    }
}

@compute @workgroup_size(WG_BACKWARD)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let k = flat_index(wg, nwg, local, WG_BACKWARD);
    var node_index = NO_NODE;
    var a: Acts;
    var d_out4 = vec3<f32>(0.0);
    var d_pre3: array<f32, HIDDEN>;
    var d_out1: array<f32, OUT1>;
    var d_pre1: array<f32, HIDDEN>;
    var base = 0u;
    var local_pos = vec3<f32>(0.0);
    if k < active_count[0] {
        let s = active_list[k];
        let sample = samples[s];
        let g = sample_grads[s];
        if sample.node != NO_NODE && any(g != vec4<f32>(0.0)) {
            node_index = sample.node;
            base = node_index * NODE_PARAMS;
            local_pos = node_local(nodes[node_index], sample.pos);
            a = field_eval(base, local_pos, rays[sample.ray].dir);
            d_out4 = g.xyz * a.rgb * (vec3<f32>(1.0) - a.rgb);
            // colour decoder
            for (var j = 0u; j < HIDDEN; j++) {
                var acc = 0.0;
                for (var c = 0u; c < 3u; c++) {
                    acc += params[base + OFF_W4 + c * HIDDEN + j] * d_out4[c];
                }
                d_pre3[j] = select(0.0, acc, a.pre3[j] > 0.0);
            }
            for (var k = 0u; k < GEO; k++) {
                var acc = 0.0;
                for (var j = 0u; j < HIDDEN; j++) {
                    acc += params[base + OFF_W3 + j * IN3 + k] * d_pre3[j];
                }
                d_out1[k + 1u] = acc;
            }
            // density: d sigma / d raw is sigma (exp activation; the clamps pass the gradient straight through)
            d_out1[0] = g.w * a.sigma;
            for (var j = 0u; j < HIDDEN; j++) {
                var acc = 0.0;
                for (var k = 0u; k < OUT1; k++) {
                    acc += params[base + OFF_W2 + k * HIDDEN + j] * d_out1[k];
                }
                d_pre1[j] = select(0.0, acc, a.pre1[j] > 0.0);
            }
        }
    }
    wg_node[local] = node_index;
    if node_index != NO_NODE {
        wg_active = 1u;
    }
    // workgroups of skipped (empty-space) samples only: nothing to reduce
    if workgroupUniformLoad(&wg_active) == 0u {
        return;
    }

    // colour output layer: input relu(pre3), delta d_out4
    for (var j = 0u; j < HIDDEN; j++) {
        wg_in[local * MAX_IN + j] = max(a.pre3[j], 0.0);
    }
    for (var c = 0u; c < 3u; c++) {
        wg_delta[local * MAX_OUT + c] = d_out4[c];
    }
    workgroupBarrier();
    reduce_layer(local, 3u, HIDDEN, OFF_W4, OFF_B4);
    workgroupBarrier();

    // colour hidden layer: input in3, delta d_pre3
    for (var i = 0u; i < IN3; i++) {
        wg_in[local * MAX_IN + i] = a.in3[i];
    }
    for (var j = 0u; j < HIDDEN; j++) {
        wg_delta[local * MAX_OUT + j] = d_pre3[j];
    }
    workgroupBarrier();
    reduce_layer(local, HIDDEN, IN3, OFF_W3, OFF_B3);
    workgroupBarrier();

    // density output layer: input relu(pre1), delta d_out1
    for (var j = 0u; j < HIDDEN; j++) {
        wg_in[local * MAX_IN + j] = max(a.pre1[j], 0.0);
    }
    for (var k = 0u; k < OUT1; k++) {
        wg_delta[local * MAX_OUT + k] = d_out1[k];
    }
    workgroupBarrier();
    reduce_layer(local, OUT1, HIDDEN, OFF_W2, OFF_B2);
    workgroupBarrier();

    // density hidden layer: input the encoding, delta d_pre1
    for (var i = 0u; i < IN1; i++) {
        wg_in[local * MAX_IN + i] = a.in1[i];
    }
    for (var j = 0u; j < HIDDEN; j++) {
        wg_delta[local * MAX_OUT + j] = d_pre1[j];
    }
    workgroupBarrier();
    reduce_layer(local, HIDDEN, IN1, OFF_W1, OFF_B1);

    // hash tables: scatter d(encoding) to the 8 corners of each level's cell
    if node_index != NO_NODE {
        for (var l = 0u; l < HASH_LEVELS; l++) {
            var d0 = 0.0;
            var d1 = 0.0;
            for (var j = 0u; j < HIDDEN; j++) {
                d0 += params[base + OFF_W1 + j * IN1 + 2u * l] * d_pre1[j];
                d1 += params[base + OFF_W1 + j * IN1 + 2u * l + 1u] * d_pre1[j];
            }
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
