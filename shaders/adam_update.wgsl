// One Adam step of parameter i (SPEC §4) for its gradient `raw`, with one learning rate for the hash
// tables and one for the decoders. Non-finite gradients are dropped and counted. Needs the `adam`,
// `params`, `m1`, `m2` and `sanitized` bindings.

fn adam_update(i: u32, raw: f32) {
    if nonfinite(raw) {
        atomicAdd(&sanitized[SANITIZED_ADAM], 1u);
        return;
    }
    // a page starts at a node's block, so the offset inside the block is i % NODE_PARAMS
    let lr = select(adam.lr_mlp, adam.lr_hash, i % NODE_PARAMS < HASH_PARAMS);
    let m = adam.beta1 * m1[i] + (1.0 - adam.beta1) * raw;
    let v = adam.beta2 * m2[i] + (1.0 - adam.beta2) * raw * raw;
    m1[i] = m;
    m2[i] = v;
    params[i] -= lr * (m / adam.bias1) / (sqrt(v / adam.bias2) + adam.eps);
}
