//! The adversarial term's patch discriminator (seed §1.4): three convolutions on a structure patch
//! of S pixels (input 2 x - 1), 3 -> 32 (4 x 4, stride 2, ReLU), 32 -> 64 (4 x 4, stride 2, ReLU),
//! 64 -> 1 (3 x 3, linear): a logit per position of an S/4 x S/4 map, each judging a receptive field
//! of 22 pixels as real (a training photo) or rendered. It runs on the same convolution passes as
//! LPIPS (shaders/conv*.wgsl) with its own parameters and Adam; `trainer::adversarial` records it.

use crate::lpips::Conv;

/// The discriminator's convolutions; the last has no ReLU (its outputs are logits).
pub const CONVS: [Conv; 3] = [
    Conv { in_channels: 3, out_channels: 32, kernel: 4, stride: 2, pad: 1, pool_before: false },
    Conv { in_channels: 32, out_channels: 64, kernel: 4, stride: 2, pad: 1, pool_before: false },
    Conv { in_channels: 64, out_channels: 1, kernel: 3, stride: 1, pad: 1, pool_before: false },
];

/// The smallest structure patch it takes (a 4 x 4 map of logits).
pub const MIN_SIZE: u32 = 16;

/// Adam's betas for the discriminator (the usual GAN choice: a short first-moment memory).
pub const BETAS: (f32, f32) = (0.5, 0.999);

/// Per convolution, the first weight and the first bias in the flat parameters, and their count.
pub fn offsets() -> ([u32; 3], [u32; 3], u32) {
    let (mut weight, mut bias, mut at) = ([0; 3], [0; 3], 0u32);
    for (k, c) in CONVS.iter().enumerate() {
        weight[k] = at;
        at += c.weights() as u32;
        bias[k] = at;
        at += c.out_channels;
    }
    (weight, bias, at)
}

/// The edge of each tensor (input first) for squares of `size` pixels.
pub fn sizes(size: u32) -> [u32; 4] {
    let mut edges = [size; 4];
    for (k, c) in CONVS.iter().enumerate() {
        edges[k + 1] = c.out_size(edges[k]);
    }
    edges
}

/// Initial parameters: He-uniform weights, zero biases (seeded).
pub fn init(seed: u64) -> Vec<f32> {
    let mut rng = crate::field::SplitMix64(seed ^ 0xd15c);
    let (weight, _, total) = offsets();
    let mut params = vec![0.0f32; total as usize];
    for (k, c) in CONVS.iter().enumerate() {
        let bound = (6.0 / (c.in_channels * c.kernel * c.kernel) as f32).sqrt();
        let w = weight[k] as usize;
        for p in &mut params[w..w + c.weights()] {
            *p = (rng.next_f32() * 2.0 - 1.0) * bound;
        }
    }
    params
}
