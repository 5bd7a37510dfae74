//! Assembles a pass's WGSL: a generated header of the field's sizes, the shared helpers, the struct
//! definitions and bindings its `kernel!` declaration names, the helpers it includes, the pass.

use crate::field::FieldLayout;
use crate::gpu::kernel::BindingDecl;
use crate::gpu::unrolled::{self, Dense, WeightSource};
use std::fmt::Write;

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const OCTREE: &str = include_str!("../../shaders/octree.wgsl");
const PLACE_SAMPLE: &str = include_str!("../../shaders/place_sample.wgsl");
const FIELD: &str = include_str!("../../shaders/field.wgsl");
const HASH_GRID: &str = include_str!("../../shaders/hash_grid.wgsl");
const ADAM_UPDATE: &str = include_str!("../../shaders/adam_update.wgsl");
const RAY_LOSS: &str = include_str!("../../shaders/ray_loss.wgsl");
const NODE_GROUPS: &str = include_str!("../../shaders/node_groups.wgsl");
const GRAD_STATS: &str = include_str!("../../shaders/grad_stats.wgsl");

/// Shared WGSL a pass can include (after its bindings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    /// The octree and the per-sample level choice (needs a `nodes` binding).
    Octree,
    /// `place_sample`: a sample's node, skipping and rank (needs the `Samples` pass's bindings and
    /// the Octree include).
    PlaceSample,
    /// Which node and which samples a workgroup of a node-batched field pass takes (needs the
    /// `page`, `wg_first`, `node_counts`, `node_offsets` and `active_list` bindings).
    NodeGroups,
    /// Which hash-table entries a node-local point reads, with what weights.
    HashGrid,
    /// One node's field: hash encoding (includes HashGrid), the decoders' generated layers (needs
    /// `params`).
    Field,
    /// The decoders' generated backward: input gradients, weight-gradient staging and reduction
    /// (needs a `grads` float-atomic binding).
    FieldBackward,
    /// `store_acts(p, a)`: a sample's activations into the `activations` binding, word k of active
    /// sample p at k x capacity + p (generated with constant offsets); field_backward's include has
    /// the matching `load_acts`.
    StoreActivations,
    /// `adam_update(i, gradient)` (needs `adam`, `params`, `m1`, `m2`, `guard`, `sanitized`).
    AdamUpdate,
    /// The gradient statistics' per-tensor sums and their workgroup reduction (needs `grad_partials`
    /// float-atomic and `grad_max` atomic bindings).
    GradStats,
    /// The losses on rendered rays: a slot's ray, cut and weights, its pixel in its patch (needs the
    /// `batch`, `loss` and `rays` bindings of `RayLossBindings`).
    RayLoss,
}

/// Bit t set where loss term t is weighed by its cut's level weight (`records::LOSS_PER_CUT`).
fn per_cut_terms() -> u32 {
    crate::gpu::records::LOSS_PER_CUT.iter().zip(0..).map(|(&per_cut, t)| u32::from(per_cut) << t).sum()
}

/// Parameters per block of the `touched` flags (a step in several chunks): the backward flags each
/// block it adds a gradient to, and each invocation of adam_blocks updates one flagged block.
pub const ADAM_BLOCK: u32 = 64;

/// The largest finite f16.
pub const F16_MAX: f32 = 65504.0;

/// Compile-time shape of the kernels (WGSL has no preprocessor: these become constants).
#[derive(Clone, Debug)]
pub struct KernelShape {
    pub layout: FieldLayout,
    pub float_atomics: bool,
    /// Invocations per workgroup of the node-batched field passes (forward, backward, occupancy):
    /// every workgroup evaluates samples of one node. Bounded by workgroup memory.
    pub field_workgroup: u32,
    /// Where the field passes read the decoder weights from.
    pub weights: WeightSource,
    /// The backward flags the blocks it adds gradients to, for Adam over flagged blocks (a step in
    /// several chunks; else Adam finds the touched entries from the samples, node by node).
    pub flag_blocks: bool,
    /// The training forward stores each active sample's activations and the backward reads them
    /// instead of recomputing the field (`train.recompute_backward = false`).
    pub store_activations: bool,
    /// Mixed precision (`train.precision = "mixed"` on an adapter with SHADER_F16): the field passes
    /// read an f16 copy of the hash tables, the per-sample gradients are f16 under a loss scale,
    /// stored activations are f16 (the `precision` aliases of `gpu::layout`).
    pub half: bool,
}

impl KernelShape {
    pub fn new(layout: FieldLayout, float_atomics: bool, workgroup_storage: u32, weights: WeightSource) -> Self {
        let (max_in, max_out) = max_widths(&layout);
        let staging = 4 * (max_in + 4 * max_out.div_ceil(4) + 1);
        let weight_bytes = match weights {
            WeightSource::Workgroup => 4 * layout.mlp_params(),
            WeightSource::Storage => 0,
        };
        // a little below the limit: the compiler may add workgroup variables of its own
        let budget = workgroup_storage.saturating_sub(1024);
        let mut field_workgroup = Self::field_lanes(weights);
        while field_workgroup > 8 && weight_bytes + field_workgroup * staging > budget {
            field_workgroup /= 2;
        }
        Self {
            layout,
            float_atomics,
            field_workgroup,
            weights,
            flag_blocks: false,
            store_activations: false,
            half: false,
        }
    }

    /// Invocations per field workgroup before workgroup memory bounds them: 64 on a GPU, 32 on a CPU
    /// adapter (the one that reads the decoder weights from workgroup memory). lavapipe runs a
    /// workgroup's invocations eight to a SIMD register, so a lane without a sample costs what one with
    /// a sample costs, and a node's last workgroup is filled only to its sample count: a deep tree's
    /// nodes, with a few dozen samples each, left half the lanes of 64-wide workgroups idle. Narrower
    /// workgroups fill better but pay more often for what each workgroup does once (copying its node's
    /// weights, one atomic per decoder weight in the backward, llvmpipe starting it). Measured with
    /// `bench` (2026-11-26, gen800, equal samples per step): depth 3, 585 nodes: 0.50 of the lanes
    /// filled and 195k evaluated samples/s at 64, 0.66 and 222k at 32, 0.80 and 221k at 16; depth 1 and
    /// lego-200 (nodes of thousands of samples): 32 as fast as 64, 16 slower by 10%. Looping over
    /// rounds of samples inside one 16-wide workgroup (the fill of 16 at the fixed costs of 64) made
    /// the field forward 5 times slower: llvmpipe loads the weights uniformly only outside control flow.
    fn field_lanes(weights: WeightSource) -> u32 {
        match weights {
            WeightSource::Workgroup => 32,
            WeightSource::Storage => 64,
        }
    }

    /// Whether field_backward's weight-gradient sums are written out sample by sample
    /// (`Dense::reduce_unrolled`: a CPU adapter, which reads the weights from workgroup memory too)
    /// rather than looped over the samples (`Dense::reduce`).
    pub fn sums_written_out(&self) -> bool {
        self.weights == WeightSource::Workgroup
    }

    /// Whether the field passes' workgroup memory fits `workgroup_storage` bytes.
    pub fn fits(&self, workgroup_storage: u32) -> bool {
        let (max_in, max_out) = max_widths(&self.layout);
        let staging = 4 * (max_in + 4 * max_out.div_ceil(4) + 1);
        let weight_bytes = if self.weights == WeightSource::Workgroup { 4 * self.layout.mlp_params() } else { 0 };
        weight_bytes + self.field_workgroup * staging <= workgroup_storage
    }

    /// The whole source of a pass.
    pub fn assemble(&self, includes: &[Include], workgroup: u32, bindings: &[BindingDecl], body: &str) -> String {
        let mut source = self.header();
        let _ = writeln!(source, "const WORKGROUP: u32 = {workgroup}u;");
        let _ = writeln!(source, "const FLAG_BLOCKS: bool = {};", self.flag_blocks);
        let _ = writeln!(source, "const STORE_ACTS: bool = {};", self.store_activations);
        let _ = writeln!(source, "const SUMS_WRITTEN_OUT: bool = {};", self.sums_written_out());
        source.push_str(&self.precision());
        source.push_str(COMMON);
        let mut defined: Vec<&str> = Vec::new();
        for binding in bindings {
            if let Some(definition) = &binding.definition {
                if !defined.contains(&binding.element.as_str()) {
                    defined.push(&binding.element);
                    source.push_str(definition);
                }
            }
        }
        for (index, binding) in bindings.iter().enumerate() {
            source.push_str(&binding.wgsl(index, self.float_atomics));
        }
        for include in includes {
            match include {
                Include::Octree => source.push_str(OCTREE),
                Include::PlaceSample => source.push_str(PLACE_SAMPLE),
                Include::NodeGroups => source.push_str(NODE_GROUPS),
                Include::HashGrid => source.push_str(HASH_GRID),
                Include::Field => {
                    source.push_str(HASH_GRID);
                    self.field(&mut source)
                }
                Include::FieldBackward => self.field_backward(&mut source),
                Include::StoreActivations => source.push_str(&unrolled::activations(&self.layout, true)),
                Include::AdamUpdate => source.push_str(ADAM_UPDATE),
                Include::GradStats => source.push_str(GRAD_STATS),
                Include::RayLoss => source.push_str(RAY_LOSS),
            }
        }
        source.push_str(body);
        source
    }

    fn field(&self, source: &mut String) {
        source.push_str("// generated by src/gpu/unrolled.rs: where the decoder weights are read\n");
        source.push_str(&self.weights.declarations());
        source.push_str("// generated by src/gpu/unrolled.rs: the decoders' layers\n");
        for layer in self.layers() {
            source.push_str(&layer.forward());
        }
        source.push_str(FIELD);
    }

    fn field_backward(&self, source: &mut String) {
        let [density_hidden, density_out, colour_hidden, colour_out] = self.layers();
        source.push_str("// generated by src/gpu/unrolled.rs: the decoders' backward\n");
        source.push_str(&colour_out.input_gradient(self.layout.hidden, "HIDDEN"));
        source.push_str(&colour_hidden.input_gradient(self.layout.geo, "GEO"));
        source.push_str(&density_out.input_gradient(self.layout.hidden, "HIDDEN"));
        source.push_str(&density_hidden.input_gradient(self.layout.in1, "IN1"));
        for layer in [density_hidden, density_out, colour_hidden, colour_out] {
            source.push_str(&layer.stage());
            if self.sums_written_out() {
                source.push_str(&layer.reduce_unrolled(self.field_workgroup));
            } else {
                source.push_str(&layer.reduce());
            }
        }
        source.push_str(&unrolled::activations(&self.layout, false));
    }

    /// The decoders' dense layers, in evaluation order.
    fn layers(&self) -> [Dense; 4] {
        let l = &self.layout;
        let dense = |name, in_const, out_const, n_in, n_out, off_w, off_b, relu_input| Dense {
            name,
            in_const,
            out_const,
            n_in,
            n_out,
            off_w,
            off_b,
            mlp_start: l.hash_params,
            relu_input,
            weights: self.weights,
        };
        [
            dense("density_hidden", "IN1", "HIDDEN", l.in1, l.hidden, l.off_w1, l.off_b1, false),
            dense("density_out", "HIDDEN", "OUT1", l.hidden, l.out1, l.off_w2, l.off_b2, true),
            dense("colour_hidden", "IN3", "HIDDEN", l.in3, l.hidden, l.off_w3, l.off_b3, false),
            dense("colour_out", "HIDDEN", "RGB", l.hidden, 3, l.off_w4, l.off_b4, true),
        ]
    }

    /// The number formats: `HALF`, the aliases of `gpu::layout::precision`, and the conversions
    /// into them. An f16 gradient record that would overflow becomes infinite, so the overflow
    /// reaches the gradient's non-finite count, as dynamic loss scaling needs (grad_guard.wgsl).
    fn precision(&self) -> String {
        let max_scale = format!("const MAX_LOSS_SCALE: f32 = {:.1};\n", crate::config::MAX_LOSS_SCALE);
        max_scale
            + &if self.half {
                format!(
                    "const HALF: bool = true;\nconst F16_MAX: f32 = {F16_MAX:.1};\n\
                 alias TablePair = vec2<f16>;\nalias TableEntry = f16;\nalias GradRecord = vec4<f16>;\n\
                 alias ActRecord = vec4<f16>;\n\
                 fn to_table_entry(v: f32) -> TableEntry {{\n    return TableEntry(clamp(v, -F16_MAX, F16_MAX));\n}}\n\
                 fn to_grad_record(v: vec4<f32>) -> GradRecord {{\n    \
                 if any(abs(v) > vec4<f32>(F16_MAX)) {{\n        \
                 // the saturated component doubles to infinity\n        \
                 return GradRecord(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX))) * f16(2.0);\n    }}\n    \
                 return GradRecord(v);\n}}\n\
                 fn to_act_record(v: vec4<f32>) -> ActRecord {{\n    \
                 return ActRecord(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));\n}}\n"
                )
            } else {
                "const HALF: bool = false;\nalias TablePair = vec2<f32>;\nalias TableEntry = f32;\n\
             alias GradRecord = vec4<f32>;\nalias ActRecord = vec4<f32>;\n\
             fn to_table_entry(v: f32) -> TableEntry {\n    return v;\n}\n\
             fn to_grad_record(v: vec4<f32>) -> GradRecord {\n    return v;\n}\n\
             fn to_act_record(v: vec4<f32>) -> ActRecord {\n    return v;\n}\n"
                    .to_string()
            }
    }

    fn header(&self) -> String {
        let l = &self.layout;
        let (max_in, max_out) = max_widths(l);
        let wg = self.field_workgroup;
        // `enable` must come before any declaration
        let mut h = String::from(if self.half { "enable f16;\n" } else { "" });
        h.push_str("// generated by src/gpu/shader.rs\n");
        let consts = [
            ("HASH_LEVELS", l.hash_levels),
            ("TABLE_SIZE", l.table_size),
            ("HIDDEN", l.hidden),
            ("GEO", l.geo),
            ("SH_DEGREE", l.sh_degree),
            ("SH_DIM", l.sh_dim),
            ("IN1", l.in1),
            ("OUT1", l.out1),
            ("IN3", l.in3),
            ("RGB", 3),
            ("HASH_PARAMS", l.hash_params),
            ("NODE_PARAMS", l.node_params),
            ("MLP_PARAMS", l.mlp_params()),
            ("DENSE_SAMPLES", l.dense_samples()),
            ("ACT_VEC4", l.act_words() / 4),
            ("MAX_IN", max_in),
            ("MAX_OUT4", max_out.div_ceil(4)),
            ("FIELD_WG", wg),
            ("WG_IN_SIZE", wg * max_in),
            ("WG_DELTA_SIZE", wg * max_out.div_ceil(4)),
            ("ADAM_BLOCK", ADAM_BLOCK),
            ("MAX_CUTS", crate::gpu::records::MAX_CUTS as u32),
            ("LOSS_TERMS", crate::gpu::records::LOSS_TERMS as u32),
            ("STATS_WORDS", crate::gpu::records::STATS_WORDS as u32),
            ("STATS_CUT_BATCHES", crate::gpu::records::STATS_CUT_BATCHES as u32),
            ("OCC_PHASES", crate::gpu::records::OCC_PHASES),
            ("NO_CUT", crate::gpu::records::NO_CUT),
            ("NO_TERM", crate::gpu::records::NO_TERM),
            ("NORM_PARTIALS", crate::gpu::records::NORM_PARTIALS),
            ("PROBES_PER_GROUP", crate::gpu::records::PROBES_PER_GROUP),
            ("PER_CUT_TERMS", per_cut_terms()),
            ("COLOUR_START", l.off_w3),
            ("GRAD_TENSORS", crate::gpu::records::GRAD_TENSORS.len() as u32),
            ("GRAD_SLOTS", crate::gpu::records::GRAD_SLOTS),
            ("GRAD_SLOT_WORDS", crate::gpu::records::GRAD_SLOT_WORDS),
            ("MAX_ANOMALY_WINDOW", crate::config::MAX_ANOMALY_WINDOW),
        ];
        for (name, value) in consts {
            let _ = writeln!(h, "const {name}: u32 = {value}u;");
        }
        for (name, term) in crate::gpu::records::LOSS_NAMES.iter().zip(0u32..) {
            let _ = writeln!(h, "const TERM_{}: u32 = {term}u;", name.to_uppercase());
        }
        {
            use crate::gpu::records::guard::*;
            let words = [
                ("SCALE", SCALE),
                ("SKIP", SKIP),
                ("STEP_LOSS", STEP_LOSS),
                ("FILLED", FILLED),
                ("NEXT", NEXT),
                ("RUN", RUN),
                ("NORM", NORM),
                ("LOSS", LOSS),
                ("NORM_SUM", NORM_SUM),
                ("STEPS", STEPS),
                ("ANOMALY_LOSS", ANOMALY_LOSS),
                ("ANOMALY_GRAD", ANOMALY_GRAD),
                ("ANOMALY_NONFINITE", ANOMALY_NONFINITE),
                ("SKIPPED", SKIPPED),
                ("CLIPPED", CLIPPED),
                ("MAX_RUN", MAX_RUN),
                ("OVERFLOWS", OVERFLOWS),
                ("LOSS_SCALE", LOSS_SCALE),
                ("CLEAN_STEPS", CLEAN_STEPS),
                ("TENSORS", TENSORS),
                ("HISTORY", HISTORY),
            ];
            for (name, word) in words {
                let _ = writeln!(h, "const G_{name}: u32 = {word}u;");
            }
        }
        for (name, slot) in crate::gpu::records::SANITIZED_SLOTS.iter().zip(0u32..) {
            let _ = writeln!(h, "const SANITIZED_{}: u32 = {slot}u;", name.to_uppercase());
        }
        h.push_str("fn level_resolution(l: u32) -> u32 {\n    switch l {\n");
        for (i, r) in l.resolutions.iter().enumerate() {
            let _ = writeln!(h, "        case {i}u: {{ return {r}u; }}");
        }
        h.push_str("        default: { return 1u; }\n    }\n}\n");
        h.push_str("fn level_dense(l: u32) -> bool {\n    switch l {\n");
        for i in 0..l.resolutions.len() {
            let _ = writeln!(h, "        case {i}u: {{ return {}; }}", l.level_dense(i));
        }
        h.push_str("        default: { return false; }\n    }\n}\n");
        h
    }
}

fn max_widths(l: &FieldLayout) -> (u32, u32) {
    (l.hidden.max(l.in1).max(l.in3), l.hidden.max(l.out1).max(3))
}
