//! LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
//! Metric"), AlexNet variant: the network's description, its weights and their safetensors file.
//!
//! The distance between two images: each goes through AlexNet's five convolutions (torchvision's
//! `features`, each followed by a ReLU, max pools of 3 / stride 2 before the second and the third);
//! at each of the five ReLU outputs the features are normalised to unit length over the channels
//! at every position, their squared difference is weighed per channel by the learned linear head
//! (non-negative weights, no bias) and averaged over the positions; the five layers are summed.
//! Inputs are colours in [0, 1], mapped to [-1, 1] and then through LPIPS's scaling layer
//! ((x - SHIFT) / SCALE per channel). The passes (shaders/lpips_*.wgsl, conv*.wgsl,
//! max_pool*.wgsl; `trainer::lpips`) run it on the step's structure patches.
//!
//! The weights file holds float32 tensors named `conv{1..5}.weight` ([out, in, k, k], PyTorch's
//! layout), `conv{1..5}.bias` ([out]) and `lin{1..5}.weight` ([channels]);
//! scripts/convert_lpips.py writes it from the official LPIPS heads and torchvision's AlexNet.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// LPIPS's scaling layer: the network sees (2 x - 1 - SHIFT) / SCALE per channel.
pub const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
pub const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// Max pools: 3 x 3 windows, stride 2, no padding (torchvision's AlexNet).
pub const POOL_KERNEL: u32 = 3;
pub const POOL_STRIDE: u32 = 2;

/// One convolution of AlexNet's features, followed by a ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub in_channels: u32,
    pub out_channels: u32,
    pub kernel: u32,
    pub stride: u32,
    pub pad: u32,
    /// a max pool comes before it
    pub pool_before: bool,
}

impl Conv {
    pub fn weights(&self) -> usize {
        (self.out_channels * self.in_channels * self.kernel * self.kernel) as usize
    }

    /// Output edge for an input edge of `size` pixels.
    pub fn out_size(&self, size: u32) -> u32 {
        (size + 2 * self.pad).saturating_sub(self.kernel) / self.stride + 1
    }
}

/// torchvision's AlexNet `features` (layers 0, 3, 6, 8, 10).
pub const CONVS: [Conv; 5] = [
    Conv { in_channels: 3, out_channels: 64, kernel: 11, stride: 4, pad: 2, pool_before: false },
    Conv { in_channels: 64, out_channels: 192, kernel: 5, stride: 1, pad: 2, pool_before: true },
    Conv { in_channels: 192, out_channels: 384, kernel: 3, stride: 1, pad: 1, pool_before: true },
    Conv { in_channels: 384, out_channels: 256, kernel: 3, stride: 1, pad: 1, pool_before: false },
    Conv { in_channels: 256, out_channels: 256, kernel: 3, stride: 1, pad: 1, pool_before: false },
];

/// Output edge of a max pool over `size` pixels (0 when the window does not fit).
pub fn pool_out_size(size: u32) -> u32 {
    if size < POOL_KERNEL {
        0
    } else {
        (size - POOL_KERNEL) / POOL_STRIDE + 1
    }
}

/// The smallest square (pixels a side) the network takes: every layer keeps at least one position.
pub const MIN_SIZE: u32 = 31;

/// One tensor of activations per image: channels x size x size, channel-major, rows of pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub channels: u32,
    pub size: u32,
}

impl Tensor {
    pub fn len(&self) -> u32 {
        self.channels * self.size * self.size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One stage of the forward: a convolution (+ ReLU) or a max pool, from tensor `input` to `output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Conv { conv: usize, input: usize, output: usize },
    Pool { input: usize, output: usize },
}

/// The network on squares of `size` pixels: its tensors (the input first) and stages in order, and
/// which tensors the linear heads read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub size: u32,
    pub tensors: Vec<Tensor>,
    pub stages: Vec<Stage>,
    /// the tensors of the five ReLU outputs
    pub features: [usize; 5],
}

impl Plan {
    pub fn new(size: u32) -> Result<Self> {
        if size < MIN_SIZE {
            bail!("LPIPS needs squares of at least {MIN_SIZE} pixels, got {size}");
        }
        let mut tensors = vec![Tensor { channels: 3, size }];
        let mut stages = Vec::new();
        let mut features = [0; 5];
        for (k, conv) in CONVS.iter().enumerate() {
            if conv.pool_before {
                let input = tensors.len() - 1;
                let edge = pool_out_size(tensors[input].size);
                tensors.push(Tensor { channels: tensors[input].channels, size: edge });
                stages.push(Stage::Pool { input, output: input + 1 });
            }
            let input = tensors.len() - 1;
            let edge = conv.out_size(tensors[input].size);
            tensors.push(Tensor { channels: conv.out_channels, size: edge });
            stages.push(Stage::Conv { conv: k, input, output: input + 1 });
            features[k] = input + 1;
        }
        debug_assert!(tensors.iter().all(|t| t.size >= 1));
        Ok(Self { size, tensors, stages, features })
    }

    /// Floats of activations per image, every tensor.
    pub fn floats_per_image(&self) -> u64 {
        self.tensors.iter().map(|t| u64::from(t.len())).sum()
    }

    /// Positions of the largest feature tensor (the first).
    pub fn positions(&self) -> u32 {
        self.features.iter().map(|&f| self.tensors[f].size * self.tensors[f].size).max().unwrap_or(0)
    }
}

/// Where each tensor of `CONVS` and the heads lives in the flat weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightOffsets {
    pub weight: [u32; 5],
    pub bias: [u32; 5],
    pub head: [u32; 5],
    pub total: u32,
}

pub fn weight_offsets() -> WeightOffsets {
    let mut at = 0u32;
    let (mut weight, mut bias, mut head) = ([0; 5], [0; 5], [0; 5]);
    for (k, conv) in CONVS.iter().enumerate() {
        weight[k] = at;
        at += conv.weights() as u32;
        bias[k] = at;
        at += conv.out_channels;
    }
    for (k, conv) in CONVS.iter().enumerate() {
        head[k] = at;
        at += conv.out_channels;
    }
    WeightOffsets { weight, bias, head, total: at }
}

/// The tensors of a weights file: (name, shape, offset in the flat weights).
pub fn weight_tensors() -> Vec<(String, Vec<usize>, usize)> {
    let o = weight_offsets();
    let mut list = Vec::new();
    for (k, c) in CONVS.iter().enumerate() {
        let (out, inp, ker) = (c.out_channels as usize, c.in_channels as usize, c.kernel as usize);
        list.push((format!("conv{}.weight", k + 1), vec![out, inp, ker, ker], o.weight[k] as usize));
        list.push((format!("conv{}.bias", k + 1), vec![out], o.bias[k] as usize));
    }
    for (k, c) in CONVS.iter().enumerate() {
        list.push((format!("lin{}.weight", k + 1), vec![c.out_channels as usize], o.head[k] as usize));
    }
    list
}

/// The network's weights, flat in `weight_offsets` order (what the passes bind).
#[derive(Clone, Debug, PartialEq)]
pub struct LpipsWeights {
    pub values: Vec<f32>,
}

impl LpipsWeights {
    /// Reads a weights file (see the module's documentation); every error names the file and the
    /// tensor.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read the LPIPS weights {}", path.display()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
        let mut values = vec![0.0f32; weight_offsets().total as usize];
        for (name, shape, offset) in weight_tensors() {
            let tensor = file.tensor(&name).map_err(|_| {
                anyhow::anyhow!(
                    "{}: no tensor {name} (an LPIPS weights file holds conv1..5.weight/bias and lin1..5.weight; \
                     scripts/convert_lpips.py writes one)",
                    path.display()
                )
            })?;
            if tensor.dtype() != safetensors::Dtype::F32 {
                bail!("{}: tensor {name} is {:?}, expected F32", path.display(), tensor.dtype());
            }
            // the heads may keep PyTorch's [1, C, 1, 1]
            let squeezed: Vec<usize> = tensor.shape().iter().copied().filter(|&d| d != 1).collect();
            let wanted: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
            if squeezed != wanted {
                bail!("{}: tensor {name} has shape {:?}, expected {shape:?}", path.display(), tensor.shape());
            }
            let data = tensor.data();
            for (i, chunk) in data.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                if !v.is_finite() {
                    bail!("{}: tensor {name} has a non-finite value at {i}", path.display());
                }
                values[offset + i] = v;
            }
        }
        Ok(Self { values })
    }

    /// Writes the weights as a safetensors file (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = weight_tensors()
            .into_iter()
            .map(|(name, shape, offset)| {
                let n: usize = shape.iter().product();
                let bytes = self.values[offset..offset + n].iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, shape, bytes)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("the shape matches the bytes");
                (name.clone(), view)
            })
            .collect();
        let bytes = safetensors::tensor::serialize(views, None).context("serializing the LPIPS weights")?;
        crate::io::write_atomic(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Random weights (He-scaled convolutions, small biases, positive heads): for tests, and for
    /// measuring the passes' cost without the official weights.
    pub fn random(seed: u64) -> Self {
        let mut rng = crate::field::SplitMix64(seed);
        let o = weight_offsets();
        let mut values = vec![0.0f32; o.total as usize];
        for (k, c) in CONVS.iter().enumerate() {
            let fan_in = (c.in_channels * c.kernel * c.kernel) as f32;
            let bound = (6.0 / fan_in).sqrt();
            let w = o.weight[k] as usize;
            for v in &mut values[w..w + c.weights()] {
                *v = (rng.next_f32() * 2.0 - 1.0) * bound;
            }
            let b = o.bias[k] as usize;
            for v in &mut values[b..b + c.out_channels as usize] {
                *v = (rng.next_f32() * 2.0 - 1.0) * 0.1;
            }
            let h = o.head[k] as usize;
            for v in &mut values[h..h + c.out_channels as usize] {
                *v = rng.next_f32() * 0.2;
            }
        }
        Self { values }
    }
}
