//! The decoders' dense layers as straight-line WGSL, generated for the configured widths.
//!
//! lavapipe (llvmpipe) runs eight invocations in the lanes of one SIMD register. It lowers every
//! dynamically indexed private array to a ladder of selects, and every load whose address may differ
//! per lane to a gather. So the dense layers are written out with every weight at a constant offset
//! from a base that is the same for the whole workgroup (every workgroup of the node-batched field
//! passes evaluates samples of one node). Measured on the density decoder (16 -> 32 -> 8): 1.2 us
//! per sample as loops over a storage buffer, 0.05 us written out. A GPU's compiler unrolls the
//! loops anyway.
//!
//! Weights are row-major, `W[o][i]` at `off_w + o * n_in + i`, biases at `off_b + o`.

use std::fmt::Write;

/// Where the field passes read a node's decoder weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightSource {
    /// Copied from the parameters into workgroup memory at the start of each workgroup
    /// (`load_weights`), then read at constant offsets.
    Workgroup,
    /// Read from the parameter buffer at `wm` (the node's decoders) plus a constant offset.
    Storage,
}

impl WeightSource {
    /// The workgroup array and `load_weights(local, wm)`, which every field pass calls in uniform
    /// control flow before it evaluates a layer (a no-op when the weights are read in place).
    pub fn declarations(self) -> String {
        match self {
            WeightSource::Workgroup => concat!(
                "var<workgroup> wgt: array<vec4<f32>, MLP_PARAMS / 4u>;\n",
                "fn load_weights(local: u32, wm: u32) {\n",
                "    for (var i = local; i < MLP_PARAMS / 4u; i += WORKGROUP) {\n",
                "        wgt[i] = params[wm / 4u + i];\n",
                "    }\n",
                "    workgroupBarrier();\n",
                "}\n"
            )
            .to_string(),
            WeightSource::Storage => "fn load_weights(local: u32, wm: u32) {}\n".to_string(),
        }
    }
}

/// One dense layer of a decoder.
#[derive(Clone, Copy, Debug)]
pub struct Dense {
    /// WGSL function-name stem, e.g. `density_hidden`.
    pub name: &'static str,
    /// WGSL names of the input and output widths (constants of the header).
    pub in_const: &'static str,
    pub out_const: &'static str,
    pub n_in: u32,
    pub n_out: u32,
    /// Offsets of W and b inside a node's parameter block.
    pub off_w: u32,
    pub off_b: u32,
    /// Offset of the decoders inside a node's parameter block (`wm` points there).
    pub mlp_start: u32,
    /// The layer reads relu(x) of the previous layer's pre-activations.
    pub relu_input: bool,
    pub weights: WeightSource,
}

impl Dense {
    fn input(&self, i: u32) -> String {
        if self.relu_input {
            format!("h{i}")
        } else {
            format!("x[{i}]")
        }
    }

    /// The WGSL expression of parameter `offset` of the node's block.
    fn param(&self, offset: u32) -> String {
        let k = offset - self.mlp_start;
        // four to an element; `wm` (a node's decoders) starts on a whole element
        match self.weights {
            WeightSource::Workgroup => format!("wgt[{}][{}]", k / 4, k % 4),
            WeightSource::Storage => format!("params[wm / 4u + {}u][{}]", k / 4, k % 4),
        }
    }

    fn weight(&self, o: u32, i: u32) -> String {
        self.param(self.off_w + o * self.n_in + i)
    }

    /// `fn NAME(x, wm) -> y`: y = W f(x) + b, with f = relu when `relu_input`; `wm` is where the
    /// node's decoders start in `params`.
    pub fn forward(&self) -> String {
        let mut s = format!(
            "fn {}(x: array<f32, {}>, wm: u32) -> array<f32, {}> {{\n",
            self.name, self.in_const, self.out_const
        );
        if self.relu_input {
            for i in 0..self.n_in {
                let _ = writeln!(s, "    let h{i} = max(x[{i}], 0.0);");
            }
        }
        let _ = writeln!(s, "    var y: array<f32, {}>;", self.out_const);
        for o in 0..self.n_out {
            let terms: Vec<String> =
                (0..self.n_in).map(|i| format!("{} * {}", self.weight(o, i), self.input(i))).collect();
            let _ = writeln!(s, "    y[{o}] = {} + {};", self.param(self.off_b + o), terms.join(" + "));
        }
        s.push_str("    return y;\n}\n");
        s
    }

    /// `fn NAME_back(dy[, x], wm) -> dx` for the first `n_keep` inputs: dx = W^T dy, times relu'(x)
    /// when the layer reads relu(x).
    pub fn input_gradient(&self, n_keep: u32, keep_const: &str) -> String {
        let mut s = format!("fn {}_back(dy: array<f32, {}>", self.name, self.out_const);
        if self.relu_input {
            let _ = write!(s, ", x: array<f32, {}>", self.in_const);
        }
        let _ = writeln!(s, ", wm: u32) -> array<f32, {keep_const}> {{\n    var dx: array<f32, {keep_const}>;");
        for i in 0..n_keep {
            let terms: Vec<String> = (0..self.n_out).map(|o| format!("{} * dy[{o}]", self.weight(o, i))).collect();
            let sum = terms.join(" + ");
            if self.relu_input {
                let _ = writeln!(s, "    dx[{i}] = select(0.0, {sum}, x[{i}] > 0.0);");
            } else {
                let _ = writeln!(s, "    dx[{i}] = {sum};");
            }
        }
        s.push_str("    return dx;\n}\n");
        s
    }

    /// `fn stage_NAME(local, x, dy)`: this invocation's layer input f(x) and output gradient dy into
    /// workgroup memory for `reduce_NAME` (dy as vec4s, read by one load per four outputs).
    pub fn stage(&self) -> String {
        let mut s = format!(
            "fn stage_{}(local: u32, x: array<f32, {}>, dy: array<f32, {}>) {{\n",
            self.name, self.in_const, self.out_const
        );
        for i in 0..self.n_in {
            let value = if self.relu_input { format!("max(x[{i}], 0.0)") } else { format!("x[{i}]") };
            let _ = writeln!(s, "    wg_in[local * MAX_IN + {i}u] = {value};");
        }
        for q in 0..self.n_out.div_ceil(4) {
            let parts: Vec<String> =
                (4 * q..4 * q + 4).map(|o| if o < self.n_out { format!("dy[{o}]") } else { "0.0".into() }).collect();
            let _ = writeln!(s, "    wg_delta[local * MAX_OUT4 + {q}u] = vec4<f32>({});", parts.join(", "));
        }
        s.push_str("}\n");
        s
    }

    /// `fn reduce_NAME(local, wb, n)` on a GPU (a CPU adapter writes it out: `reduce_unrolled`): this
    /// layer's weight and bias gradients summed over the first `n` samples of the workgroup in
    /// workgroup memory (`wg_use` = the sample has a gradient, `wg_in`
    /// = the layer's input f(x), `wg_delta` = dL/dy), one lane per input (lane n_in is the bias), each
    /// holding all outputs; then one `grads_add` per weight of the workgroup's node (its block at `wb`).
    pub fn reduce(&self) -> String {
        let (name, n_in, out_const) = (self.name, self.n_in, self.out_const);
        let mut s = format!(
            "fn reduce_{name}(local: u32, wb: u32, n: u32) {{\n    for (var lane = local; lane <= {n_in}u; lane += WORKGROUP) {{\n        reduce_{name}_input(lane, wb, n);\n    }}\n}}\n"
        );
        let _ =
            writeln!(s, "fn reduce_{name}_input(lane: u32, wb: u32, n: u32) {{\n    var acc: array<f32, {out_const}>;");
        s.push_str(
            "    for (var s = 0u; s < n; s++) {\n        if wg_use[s] == 0u {\n            continue;\n        }\n",
        );
        let _ = writeln!(
            s,
            "        let x = select(1.0, wg_in[s * MAX_IN + min(lane, {}u)], lane < {n_in}u);\n        let d = s * MAX_OUT4;",
            n_in - 1
        );
        for q in 0..self.n_out.div_ceil(4) {
            let _ = writeln!(s, "        let d{q} = wg_delta[d + {q}u];");
            for o in 4 * q..(4 * q + 4).min(self.n_out) {
                let _ = writeln!(s, "        acc[{o}] += d{q}[{}] * x;", o % 4);
            }
        }
        let _ = writeln!(
            s,
            "    }}\n    let weight = lane < {n_in}u;\n    let first = wb + select({}u, {}u + lane, weight);\n    let stride = select(1u, {n_in}u, weight);",
            self.off_b, self.off_w
        );
        for o in 0..self.n_out {
            let _ = writeln!(s, "    grads_add(first + {o}u * stride, acc[{o}]);");
        }
        s.push_str("}\n");
        s
    }

    /// `reduce_NAME` for a CPU adapter: the same sums written out over the `lanes` samples of a
    /// workgroup, with no control flow before the atomics (there llvmpipe loads a uniform address
    /// once; in control flow every load is a gather). Samples without a gradient staged zero
    /// gradients, so they add nothing. Invocation `local` sums the weights of inputs local,
    /// local + lanes, ...; every invocation sums the biases and the first adds them.
    pub fn reduce_unrolled(&self, lanes: u32) -> String {
        let (name, n_in, out_const) = (self.name, self.n_in, self.out_const);
        let rounds = n_in.div_ceil(lanes);
        let mut s = format!("fn reduce_{name}(local: u32, wb: u32, n: u32) {{\n");
        for r in 0..rounds {
            let _ = writeln!(
                s,
                "    let column{r} = min(local + {}u, {}u);\n    var acc{r}: array<f32, {out_const}>;",
                r * lanes,
                n_in - 1
            );
        }
        let _ = writeln!(s, "    var bias: array<f32, {out_const}>;");
        for k in 0..lanes {
            s.push_str("    {\n");
            for r in 0..rounds {
                let _ = writeln!(s, "        let x{r} = wg_in[{k}u * MAX_IN + column{r}];");
            }
            for q in 0..self.n_out.div_ceil(4) {
                let _ = writeln!(s, "        let d{q} = wg_delta[{k}u * MAX_OUT4 + {q}u];");
                for o in 4 * q..(4 * q + 4).min(self.n_out) {
                    let d = format!("d{q}[{}]", o % 4);
                    for r in 0..rounds {
                        let _ = writeln!(s, "        acc{r}[{o}] += {d} * x{r};");
                    }
                    let _ = writeln!(s, "        bias[{o}] += {d};");
                }
            }
            s.push_str("    }\n");
        }
        for r in 0..rounds {
            let _ = writeln!(s, "    if local + {}u < {n_in}u {{", r * lanes);
            for o in 0..self.n_out {
                let _ = writeln!(s, "        grads_add(wb + {}u + column{r}, acc{r}[{o}]);", self.off_w + o * n_in);
            }
            s.push_str("    }\n");
        }
        s.push_str("    if local == 0u {\n");
        for o in 0..self.n_out {
            let _ = writeln!(s, "        grads_add(wb + {}u, bias[{o}]);", self.off_b + o);
        }
        s.push_str("    }\n}\n");
        s
    }
}

/// The activations of active sample `p` (its place in the node-sorted list) in the `activations`
/// binding, four words to a vec4: vec4 k at `k * capacity + p`, so that the lanes of a workgroup
/// touch consecutive vec4s, with capacity = arrayLength / ACT_VEC4 (a workspace without room binds
/// fewer than ACT_VEC4: capacity 0). The words, in the order of `FieldLayout::act_words`: in1, pre1,
/// out1, pre3, out4, then zeros to a multiple of 4 (f16 under mixed precision: `ActRecord`). Written out with constant offsets (private arrays
/// indexed in a loop become select ladders on lavapipe). `store` gives `store_acts(p, a)` (nothing
/// stored past the capacity), else `load_acts(p, dir)`.
pub fn activations(layout: &crate::field::FieldLayout, store: bool) -> String {
    let parts: [(&str, u32); 5] =
        [("in1", layout.in1), ("pre1", layout.hidden), ("out1", layout.out1), ("pre3", layout.hidden), ("out4", 3)];
    let words: Vec<String> =
        parts.iter().flat_map(|&(name, n)| (0..n).map(move |i| format!("a.{name}[{i}]"))).collect();
    debug_assert_eq!((words.len() as u32).next_multiple_of(4), layout.act_words());
    let mut s = String::from("fn acts_capacity() -> u32 {\n    return arrayLength(&activations) / ACT_VEC4;\n}\n");
    if store {
        s.push_str("fn store_acts(p: u32, a: Acts) {\n    let cap = acts_capacity();\n    if p >= cap {\n        return;\n    }\n");
    } else {
        s.push_str(
            "fn load_acts(p: u32, dir: vec3<f32>) -> Acts {\n    let cap = acts_capacity();\n    var a: Acts;\n",
        );
    }
    for (k, quad) in words.chunks(4).enumerate() {
        if store {
            let mut v: Vec<&str> = quad.iter().map(String::as_str).collect();
            v.resize(4, "0.0");
            let _ = writeln!(s, "    activations[{k}u * cap + p] = to_act_record(vec4<f32>({}));", v.join(", "));
        } else {
            let _ = writeln!(s, "    let v{k} = vec4<f32>(activations[{k}u * cap + p]);");
            for (c, word) in quad.iter().enumerate() {
                let _ = writeln!(s, "    {word} = v{k}[{c}];");
            }
        }
    }
    s.push_str(if store { "}\n" } else { "    return finish_acts(a, dir);\n}\n" });
    s
}
