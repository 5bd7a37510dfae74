// One Adam step of parameter i (SPEC §4) for its gradient `raw`, with one learning rate for the hash
// tables and one for the decoders. Non-finite gradients are dropped and counted. The parameter L2
// (SPEC §3.3, weight lambda_param, the mean of p^2 over the model) adds its gradient adam.l2 * p here,
// to the entries that have a gradient this step: the exact gradient would touch every parameter of
// the tree at every step, which node-batched Adam exists to avoid, so the decay is lazy, as in
// sparse optimisers (an entry decays in the steps that train it). The guard (grad_guard.wgsl) may
// skip the step (the gradient is dropped) or scale the gradient down (clipping by the global norm).
// Under mixed precision a hash-table entry's f16 copy (`tables`, read by the field passes) follows
// its f32 master weight. The guard's SCALE also takes the loss scale out of the gradient.
// Needs the `adam`, `params`, `tables`, `m1`, `m2`, `guard` and `sanitized` bindings.

// The guard's verdict for the step, read once per invocation by `adam_guard_load` (the passes' first
// statement): read per entry, the compiler reloads it, as `guard` may alias the parameters.
var<private> adam_skip: bool;
var<private> adam_scale: f32;

fn adam_guard_load() {
    adam_skip = guard[G_SKIP] != 0.0;
    adam_scale = guard[G_SCALE];
}

fn adam_update(i: u32, raw: f32) {
    if adam_skip {
        return;
    }
    if nonfinite(raw) {
        atomicAdd(&sanitized[SANITIZED_ADAM], 1u);
        return;
    }
    // a page starts at a node's block, so the offset inside the block is i % NODE_PARAMS
    let lr = select(adam.lr_mlp, adam.lr_hash, i % NODE_PARAMS < HASH_PARAMS);
    let g = raw * adam_scale + adam.l2 * params[i];
    let m = adam.beta1 * m1[i] + (1.0 - adam.beta1) * g;
    let v = adam.beta2 * m2[i] + (1.0 - adam.beta2) * g * g;
    m1[i] = m;
    m2[i] = v;
    let p = params[i] - lr * (m / adam.bias1) / (sqrt(v / adam.bias2) + adam.eps);
    params[i] = p;
    let offset = i % NODE_PARAMS;
    if HALF && offset < HASH_PARAMS {
        tables[(i / NODE_PARAMS) * HASH_PARAMS + offset] = to_table_entry(p);
    }
}
