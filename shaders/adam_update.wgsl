// One Adam step of parameter i (SPEC §4) for its gradient `raw`, with one learning rate for the hash
// tables and one for the decoders. Non-finite gradients are dropped and counted. The parameter L2
// (SPEC §3.3, weight lambda_param, the mean of p^2 over the model) adds its gradient adam.l2 * p here,
// to the entries that have a gradient this step: the exact gradient would touch every parameter of
// the tree at every step, which node-batched Adam exists to avoid, so the decay is lazy, as in
// sparse optimisers (an entry decays in the steps that train it). The guard (grad_guard.wgsl) may
// skip the step (the gradient is dropped) or scale the gradient down (clipping by the global norm).
// Under mixed precision a hash-table entry's f16 copy (`tables`, read by the field passes) follows
// its f32 master weight. The guard's SCALE also takes the loss scale out of the gradient.
// Needs the `adam`, `params`, `tables`, `m1`, `m2`, `guard` and `sanitized` bindings; `params`, `m1` and
// `m2` hold four parameters per element (a node's block and its tables start on a whole element), so
// that a sweep over dense tables moves a vec4 per load (`adam_update4`): on a CPU device each load is
// a loop over the lanes, whatever its width.

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
    let q = i >> 2u;
    let c = i & 3u;
    // a page starts at a node's block, so the offset inside the block is i % NODE_PARAMS
    let offset = i % NODE_PARAMS;
    let lr = select(adam.lr_mlp, adam.lr_hash, offset < HASH_PARAMS);
    let p0 = params[q][c];
    let g = raw * adam_scale + adam.l2 * p0;
    let m = adam.beta1 * m1[q][c] + (1.0 - adam.beta1) * g;
    let v = adam.beta2 * m2[q][c] + (1.0 - adam.beta2) * g * g;
    m1[q][c] = m;
    m2[q][c] = v;
    let p = p0 - lr * (m / adam.bias1) / (sqrt(v / adam.bias2) + adam.eps);
    params[q][c] = p;
    if HALF && offset < HASH_PARAMS {
        tables[(i / NODE_PARAMS) * HASH_PARAMS + offset] = to_table_entry(p);
    }
}

// adam_update for the four entries of element q (all hash-table entries when `hash`, else all
// decoder parameters), with their gradients `raw` (0: no gradient, the entry is left as it is), the
// same arithmetic per entry.
fn adam_update4(q: u32, raw: vec4<f32>, hash: bool) {
    if adam_skip {
        return;
    }
    let bits = bitcast<vec4<u32>>(raw);
    let bad = (bits & vec4<u32>(0x7f800000u)) == vec4<u32>(0x7f800000u);
    if any(bad) {
        atomicAdd(&sanitized[SANITIZED_ADAM], dot(select(vec4<u32>(0u), vec4<u32>(1u), bad), vec4<u32>(1u)));
    }
    let live = (bits != vec4<u32>(0u)) & !bad;
    let p0 = params[q];
    let g = raw * adam_scale + adam.l2 * p0;
    let m0 = m1[q];
    let v0 = m2[q];
    let m = select(m0, adam.beta1 * m0 + (1.0 - adam.beta1) * g, live);
    let v = select(v0, adam.beta2 * v0 + (1.0 - adam.beta2) * g * g, live);
    m1[q] = m;
    m2[q] = v;
    let lr = select(adam.lr_mlp, adam.lr_hash, hash);
    let p = select(p0, p0 - lr * (m / adam.bias1) / (sqrt(v / adam.bias2) + adam.eps), live);
    params[q] = p;
    if HALF && hash {
        let offset = (q * 4u) % NODE_PARAMS;
        let first = (q * 4u / NODE_PARAMS) * HASH_PARAMS + offset;
        for (var c = 0u; c < 4u; c++) {
            if live[c] {
                tables[first + c] = to_table_entry(p[c]);
            }
        }
    }
}
