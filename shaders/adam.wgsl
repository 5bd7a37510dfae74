// Pass 6: Adam over every parameter, with one learning rate for the hash tables and one for the
// decoders (SPEC §4). Entries without gradient this step keep their moments (sparse hash updates).
// Clears the gradient for the next step.

@group(0) @binding(0) var<uniform> frame: Frame;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> moments: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let i = flat_index(wg, nwg, local, 256u);
    if i >= frame.n_params {
        return;
    }
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
