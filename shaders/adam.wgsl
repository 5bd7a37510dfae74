// Pass 6: Adam over every parameter, with one learning rate for the hash tables and one for the
// decoders (SPEC §4). Entries without gradient this step keep their moments (sparse hash updates).
// Clears the gradient for the next step. Each invocation takes ADAM_RUN (header) consecutive
// parameters and skips them at once when none has a gradient (most hash entries, most steps).

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> moments: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let first = flat_index(wg, nwg, local, 64u) * ADAM_RUN;
    if first >= frame.n_params {
        return;
    }
    let last = min(first + ADAM_RUN, frame.n_params);
    var any_grad = false;
    for (var i = first; i < last; i++) {
        any_grad = any_grad || bitcast<u32>(grads[i]) != 0u;
    }
    if !any_grad {
        return;
    }
    for (var i = first; i < last; i++) {
        update(i);
    }
}

fn update(i: u32) {
    let raw = grads[i];
    if bitcast<u32>(raw) == 0u {
        return;
    }
    grads[i] = 0.0;
    let g = sanitize(raw);
    if g == 0.0 {
        return;
    }
    var lr = frame.lr_mlp;
    if i % NODE_PARAMS < HASH_PARAMS {
        lr = frame.lr_hash;
    }
    var m = moments[i];
    m.x = frame.beta1 * m.x + (1.0 - frame.beta1) * g;
    m.y = frame.beta2 * m.y + (1.0 - frame.beta2) * g * g;
    moments[i] = m;
    params[i] -= lr * (m.x / frame.bias1) / (sqrt(m.y / frame.bias2) + frame.eps);
}
