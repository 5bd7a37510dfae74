// One octree node's field (SPEC §1): a multiresolution hash encoding in node-local coordinates, a
// density decoder (-> sigma and geometric features) and a colour decoder (features + SH(direction)).
// Needs `params: array<f32>` (one page of parameter blocks; the node's block at `base`), `tables`
// (their f16 copy, mixed precision), `scene`
// (max_density) and the constants of the generated header (src/gpu/shader.rs); the dense layers
// density_hidden, density_out, colour_hidden and colour_out are generated (src/gpu/unrolled.rs) and
// read the node's decoders, which start at base + HASH_PARAMS (after `load_weights`).

struct Acts {
    in1: array<f32, IN1>,
    pre1: array<f32, HIDDEN>,
    out1: array<f32, OUT1>,
    in3: array<f32, IN3>,
    pre3: array<f32, HIDDEN>,
    out4: vec3<f32>,
    rgb: vec3<f32>,
    sigma: f32,
}

fn sh_encode(d: vec3<f32>) -> array<f32, 16> {
    var out: array<f32, 16>;
    let x = d.x;
    let y = d.y;
    let z = d.z;
    out[0] = 0.28209479177387814;
    if SH_DEGREE >= 2u {
        out[1] = -0.48860251190291987 * y;
        out[2] = 0.48860251190291987 * z;
        out[3] = -0.48860251190291987 * x;
    }
    if SH_DEGREE >= 3u {
        out[4] = 1.0925484305920792 * x * y;
        out[5] = -1.0925484305920792 * y * z;
        out[6] = 0.94617469575755997 * z * z - 0.31539156525251999;
        out[7] = -1.0925484305920792 * x * z;
        out[8] = 0.54627421529603959 * (x * x - y * y);
    }
    if SH_DEGREE >= 4u {
        out[9] = 0.59004358992664352 * y * (3.0 * x * x - y * y);
        out[10] = 2.8906114426405538 * x * y * z;
        out[11] = 0.45704579946446572 * y * (5.0 * z * z - 1.0);
        out[12] = 0.3731763325901154 * z * (5.0 * z * z - 3.0);
        out[13] = 0.45704579946446572 * x * (5.0 * z * z - 1.0);
        out[14] = 1.4453057213202769 * z * (x * x - y * y);
        out[15] = 0.59004358992664352 * x * (x * x - 3.0 * y * y);
    }
    return out;
}

// A non-finite raw value stays non-finite (clamp would turn a NaN into either bound, by the
// implementation's choice), so the passes zero and count it.
fn density_from_raw(raw: f32) -> f32 {
    return select(min(exp(clamp(raw, -15.0, 15.0)), scene.max_density), raw, nonfinite(raw));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// The hash encoding: trilinear interpolation of each level's 8 corner features, a pair per load from
// `tables`: in f32 the parameters themselves, under mixed precision their f16 copy (HASH_PARAMS / 2
// pairs per node of the page, which Adam refreshes as it updates the f32 master weights).
fn encode(base: u32, local: vec3<f32>) -> array<f32, IN1> {
    var out: array<f32, IN1>;
    // f32: the tables are the parameters (a node's block starts on a whole vec4)
    let first_pair = select(base / 2u, (base / NODE_PARAMS) * (HASH_PARAMS / 2u), HALF);
    for (var l = 0u; l < HASH_LEVELS; l++) {
        let cell = grid_cell(l, local);
        let f = clamp(local, vec3<f32>(0.0), vec3<f32>(1.0)) * f32(cell.w) - vec3<f32>(cell.xyz);
        var f0 = 0.0;
        var f1 = 0.0;
        for (var c = 0u; c < 8u; c++) {
            let w = corner_weight(c, f);
            let entry = hash_entry(l, cell.xyz + corner_offset(c));
            let pair = vec2<f32>(tables[first_pair + entry]);
            f0 += w * pair.x;
            f1 += w * pair.y;
        }
        out[2u * l] = f0;
        out[2u * l + 1u] = f1;
    }
    return out;
}

// Density alone (the occupancy grid's update needs no colour).
fn field_density(base: u32, local: vec3<f32>) -> f32 {
    let wm = base + HASH_PARAMS;
    return density_from_raw(density_out(density_hidden(encode(base, local), wm), wm)[0]);
}

// The colour decoder's input: the density decoder's geometric features and SH(direction).
fn colour_input(out1: array<f32, OUT1>, dir: vec3<f32>) -> array<f32, IN3> {
    var in3: array<f32, IN3>;
    let sh = sh_encode(dir);
    for (var g = 0u; g < GEO; g++) {
        in3[g] = out1[g + 1u];
    }
    for (var k = 0u; k < SH_DIM; k++) {
        in3[GEO + k] = sh[k];
    }
    return in3;
}

// The activations that follow from the stored ones (in1, pre1, out1, pre3, out4): sigma, the colour
// decoder's input and rgb (a backward that reads stored activations; see load_acts).
fn finish_acts(stored: Acts, dir: vec3<f32>) -> Acts {
    var a = stored;
    a.sigma = density_from_raw(a.out1[0]);
    a.in3 = colour_input(a.out1, dir);
    a.rgb = vec3<f32>(sigmoid(a.out4.x), sigmoid(a.out4.y), sigmoid(a.out4.z));
    return a;
}

fn field_eval(base: u32, local: vec3<f32>, dir: vec3<f32>) -> Acts {
    var a: Acts;
    a.in1 = encode(base, local);
    let wm = base + HASH_PARAMS;
    a.pre1 = density_hidden(a.in1, wm);
    a.out1 = density_out(a.pre1, wm);
    a.sigma = density_from_raw(a.out1[0]);
    a.in3 = colour_input(a.out1, dir);
    a.pre3 = colour_hidden(a.in3, wm);
    let out4 = colour_out(a.pre3, wm);
    a.out4 = vec3<f32>(out4[0], out4[1], out4[2]);
    a.rgb = vec3<f32>(sigmoid(a.out4.x), sigmoid(a.out4.y), sigmoid(a.out4.z));
    return a;
}
