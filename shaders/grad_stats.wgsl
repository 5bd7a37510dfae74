// The gradient statistics' sums, shared by grad_norm and grad_norm_blocks. Each invocation adds the
// entries it visits to sums of its own per tensor (GRAD_TENSORS: hash tables, density decoder, colour
// decoder): sum of squares, sum, count, largest magnitude. The workgroup adds them up in workgroup
// memory (a tree) and adds the totals to one of GRAD_SLOTS partial sums (`grad_partials`, a float
// atomic add per word) and its largest magnitudes to `grad_max` (atomicMax on the bits: the bits of
// non-negative floats order as the floats do). grad_guard sums the slots. A non-finite gradient is
// counted in grad_max[GRAD_TENSORS] instead of summed: a bit test, which no compiler's assumptions
// about NaN arithmetic can remove; the guard sees the count as an anomaly.

// Per tensor: (sum of squares, sum, count, largest magnitude). Fields, not an array: a dynamically
// indexed function array is slow on a CPU adapter.
struct GradAcc {
    hash: vec4<f32>,
    density: vec4<f32>,
    colour: vec4<f32>,
}

var<workgroup> gs_acc: array<GradAcc, WORKGROUP>;

// The tensor of a parameter at `offset` in its node's block.
fn tensor_of(offset: u32) -> u32 {
    if offset < HASH_PARAMS {
        return 0u;
    }
    return select(2u, 1u, offset < COLOUR_START);
}

// `g` added to one tensor's sums.
fn grad_add4(sums: vec4<f32>, g: f32) -> vec4<f32> {
    return vec4<f32>(sums.x + g * g, sums.y + g, sums.z + 1.0, max(sums.w, abs(g)));
}

// `sums` with four gradients added without branches: `v` finite (0 where not), `counted` where
// they count (non-zero and finite).
fn grad_add_quad(sums: vec4<f32>, v: vec4<f32>, counted: vec4<bool>) -> vec4<f32> {
    let a = abs(v);
    let n = dot(select(vec4<f32>(0.0), vec4<f32>(1.0), counted), vec4<f32>(1.0));
    return vec4<f32>(sums.x + dot(v, v), sums.y + dot(v, vec4<f32>(1.0)), sums.z + n, max(sums.w, max(max(a.x, a.y), max(a.z, a.w))));
}

// Which of four gradients (as bits) are finite.
fn finite_quad(bits: vec4<u32>) -> vec4<bool> {
    return (bits & vec4<u32>(0x7f800000u)) != vec4<u32>(0x7f800000u);
}

fn merge4(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(a.xyz + b.xyz, max(a.w, b.w));
}

// A hash-table entry's gradient (the common case: no tensor lookup).
fn grad_acc_hash(acc: ptr<function, GradAcc>, g: f32) {
    if nonfinite(g) {
        atomicAdd(&grad_max[GRAD_TENSORS], 1u);
        return;
    }
    (*acc).hash = grad_add4((*acc).hash, g);
}

fn grad_acc_add(acc: ptr<function, GradAcc>, tensor: u32, g: f32) {
    if nonfinite(g) {
        atomicAdd(&grad_max[GRAD_TENSORS], 1u);
        return;
    }
    if tensor == 0u {
        (*acc).hash = grad_add4((*acc).hash, g);
    } else if tensor == 1u {
        (*acc).density = grad_add4((*acc).density, g);
    } else {
        (*acc).colour = grad_add4((*acc).colour, g);
    }
}

// Call in uniform control flow (it has barriers).
fn grad_acc_flush(acc: GradAcc, local: u32, slot: u32) {
    gs_acc[local] = acc;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if local < stride {
            let a = gs_acc[local];
            let b = gs_acc[local + stride];
            gs_acc[local] = GradAcc(merge4(a.hash, b.hash), merge4(a.density, b.density), merge4(a.colour, b.colour));
        }
        workgroupBarrier();
    }
    if local == 0u {
        let total = gs_acc[0];
        let tensors = array<vec4<f32>, 3>(total.hash, total.density, total.colour);
        for (var t = 0u; t < GRAD_TENSORS; t++) {
            for (var k = 0u; k < 3u; k++) {
                grad_partials_add(slot * GRAD_SLOT_WORDS + 3u * t + k, tensors[t][k]);
            }
            if tensors[t].w > 0.0 {
                atomicMax(&grad_max[t], bitcast<u32>(tensors[t].w));
            }
        }
    }
}
