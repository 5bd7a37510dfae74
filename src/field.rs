//! The parameter layout of one octree node's field and its initialisation (SPEC §1).
//!
//! A node's parameters are one contiguous block of `node_params` floats: the hash tables first
//! (levels x table x 2 features), then the density decoder (W1, b1, W2, b2) and the colour decoder
//! (W3, b3, W4, b4), each weight matrix row-major [out][in], then zeros to a whole number of vec4s
//! (never trained). Node n's block starts at n * node_params.

use crate::config::FieldConfig;

#[derive(Clone, Debug, PartialEq)]
pub struct FieldLayout {
    pub hash_levels: u32,
    pub table_size: u32,
    /// Grid resolution of each hash level across a node.
    pub resolutions: Vec<u32>,
    pub hidden: u32,
    pub geo: u32,
    pub sh_degree: u32,
    pub sh_dim: u32,
    /// Density decoder input (the encoding), output (sigma + features), colour decoder input.
    pub in1: u32,
    pub out1: u32,
    pub in3: u32,
    pub hash_params: u32,
    pub off_w1: u32,
    pub off_b1: u32,
    pub off_w2: u32,
    pub off_b2: u32,
    pub off_w3: u32,
    pub off_b3: u32,
    pub off_w4: u32,
    pub off_b4: u32,
    pub node_params: u32,
}

impl FieldLayout {
    pub fn new(config: &FieldConfig) -> Self {
        let hash_levels = config.hash_levels;
        let table_size = 1u32 << config.log2_table_size;
        let resolutions = level_resolutions(config.base_resolution, config.finest_resolution, hash_levels);
        let hidden = config.hidden_width;
        let geo = config.geo_features;
        let sh_dim = config.sh_degree * config.sh_degree;
        let in1 = 2 * hash_levels;
        let out1 = 1 + geo;
        let in3 = geo + sh_dim;
        let hash_params = hash_levels * table_size * 2;
        let off_w1 = hash_params;
        let off_b1 = off_w1 + hidden * in1;
        let off_w2 = off_b1 + hidden;
        let off_b2 = off_w2 + out1 * hidden;
        let off_w3 = off_b2 + out1;
        let off_b3 = off_w3 + hidden * in3;
        let off_w4 = off_b3 + hidden;
        let off_b4 = off_w4 + 3 * hidden;
        // padded to whole quads, so a node's block starts 16-byte aligned (the sweeps read vec4s)
        let node_params = (off_b4 + 3).next_multiple_of(4);
        Self {
            hash_levels,
            table_size,
            resolutions,
            hidden,
            geo,
            sh_degree: config.sh_degree,
            sh_dim,
            in1,
            out1,
            in3,
            hash_params,
            off_w1,
            off_b1,
            off_w2,
            off_b2,
            off_w3,
            off_b3,
            off_w4,
            off_b4,
            node_params,
        }
    }

    /// A level indexes its table directly (no hashing) when all its grid corners fit.
    pub fn level_dense(&self, level: usize) -> bool {
        let n = u64::from(self.resolutions[level]) + 1;
        n * n * n <= u64::from(self.table_size)
    }

    /// Floats the forward stores per sample for a backward that does not recompute the field
    /// (`train.recompute_backward = false`): the encoding, both decoders' hidden pre-activations,
    /// the density decoder's outputs and the colour decoder's 3 pre-sigmoid outputs (the colour
    /// decoder's input is rebuilt from the density outputs and the direction), padded to whole vec4s.
    pub fn act_words(&self) -> u32 {
        (self.in1 + 2 * self.hidden + self.out1 + 3).next_multiple_of(4)
    }

    /// The samples from which a node is "dense" for the passes that visit each entry with a gradient
    /// once (grad_norm, adam_nodes): its samples touch at least as many table entries (a sample: 8
    /// corners x 2 features per level) as its tables hold vec4s, so its tables are swept a vec4 at a
    /// time; with fewer, each sample's corners are visited (an atomic each, a vec4 load costs less).
    pub fn dense_samples(&self) -> u32 {
        (self.hash_params / 4).div_ceil(self.hash_levels * 16)
    }

    /// Floats of a node's block without the padding to whole vec4s: the layout of checkpoints
    /// written before the padding.
    pub fn packed_params(&self) -> u32 {
        self.off_b4 + 3
    }

    /// Node blocks of `packed_params` floats each (an older checkpoint's), padded to `node_params`.
    pub fn pad_blocks(&self, packed: &[f32]) -> Vec<f32> {
        let (from, to) = (self.packed_params() as usize, self.node_params as usize);
        let mut out = Vec::with_capacity(packed.len() / from * to);
        for block in packed.chunks(from) {
            out.extend_from_slice(block);
            out.resize(out.len() + to - from, 0.0);
        }
        out
    }

    /// Decoder parameters per node (everything after the hash tables).
    pub fn mlp_params(&self) -> u32 {
        self.node_params - self.hash_params
    }

    /// Initial parameters of `nodes` nodes: tiny hash entries, Xavier-uniform weights, zero biases.
    pub fn init_params(&self, nodes: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64(seed ^ 0x5eed_f1e1d);
        let mut params = vec![0.0f32; nodes * self.node_params as usize];
        for block in params.chunks_mut(self.node_params as usize) {
            for p in &mut block[..self.hash_params as usize] {
                *p = (rng.next_f32() * 2.0 - 1.0) * 1e-4;
            }
            let layers = [
                (self.off_w1, self.hidden, self.in1),
                (self.off_w2, self.out1, self.hidden),
                (self.off_w3, self.hidden, self.in3),
                (self.off_w4, 3, self.hidden),
            ];
            for (offset, out, inp) in layers {
                let bound = (6.0 / (out + inp) as f32).sqrt();
                for p in &mut block[offset as usize..(offset + out * inp) as usize] {
                    *p = (rng.next_f32() * 2.0 - 1.0) * bound;
                }
            }
        }
        params
    }
}

/// Geometric progression from base to finest, rounded down (the last level is exactly `finest`).
pub fn level_resolutions(base: u32, finest: u32, levels: u32) -> Vec<u32> {
    if levels == 1 {
        return vec![finest];
    }
    let growth = (f64::from(finest) / f64::from(base)).ln() / f64::from(levels - 1);
    (0..levels).map(|l| ((f64::from(base) * (growth * f64::from(l)).exp()) + 1e-6).floor() as u32).collect()
}

/// A small deterministic generator for initialisation and batch drawing.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}
