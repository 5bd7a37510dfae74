//! Image quality metrics for evaluation: MSE, PSNR and SSIM on images in [0,1].
//!
//! Mismatched or empty inputs give NaN rather than a panic: a metric is never worth a crash.

use crate::data::Image;

/// Side of the SSIM Gaussian window (skimage's `gaussian_weights=True` with sigma 1.5 gives 11).
pub const SSIM_WINDOW: usize = 11;
const SSIM_SIGMA: f64 = 1.5;
const SSIM_C1: f64 = 0.01 * 0.01;
const SSIM_C2: f64 = 0.03 * 0.03;

/// Lowest MSE PSNR is taken of: caps PSNR at 100 dB so a perfect match stays a finite number.
const MSE_FLOOR: f64 = 1.0e-10;

/// PSNR in dB for a peak of 1: -10 log10(mse), capped at 100 dB; NaN for a NaN or negative MSE.
pub fn psnr(mse: f64) -> f64 {
    if mse.is_nan() || mse < 0.0 {
        return f64::NAN;
    }
    -10.0 * mse.max(MSE_FLOOR).log10()
}

/// Mean squared difference, accumulated in f64; NaN when the lengths differ or are zero.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    sum / a.len() as f64
}

/// Standard SSIM (Wang et al. 2004) as in the NeRF papers' evaluations.
///
/// 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, population (not sample)
/// statistics, 'valid' windows only (no padding), the mean over windows and RGB channels.
/// NaN when the sizes differ, the buffers do not match the sizes, or an image is under 11x11.
pub fn ssim(a: &Image, b: &Image) -> f64 {
    let (w, h) = (a.width as usize, a.height as usize);
    let pixels = w * h;
    if (a.width, a.height) != (b.width, b.height) || a.rgb.len() != pixels * 3 || b.rgb.len() != pixels * 3 {
        return f64::NAN;
    }
    if w < SSIM_WINDOW || h < SSIM_WINDOW {
        return f64::NAN;
    }
    let kernel = gaussian_kernel();
    let mut total = 0.0;
    for channel in 0..3 {
        let x: Vec<f64> = a.rgb[channel..].iter().step_by(3).map(|&v| v as f64).collect();
        let y: Vec<f64> = b.rgb[channel..].iter().step_by(3).map(|&v| v as f64).collect();
        let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
        let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
        let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
        let [mx, my, sxx, syy, sxy] = [&x, &y, &xx, &yy, &xy].map(|img| filter_valid(img, w, h, &kernel));
        let mut sum = 0.0;
        for i in 0..mx.len() {
            let (mux, muy) = (mx[i], my[i]);
            let var_x = sxx[i] - mux * mux;
            let var_y = syy[i] - muy * muy;
            let cov = sxy[i] - mux * muy;
            let num = (2.0 * mux * muy + SSIM_C1) * (2.0 * cov + SSIM_C2);
            let den = (mux * mux + muy * muy + SSIM_C1) * (var_x + var_y + SSIM_C2);
            sum += num / den;
        }
        total += sum / mx.len() as f64;
    }
    total / 3.0
}

/// The normalised 1D Gaussian; the 2D window is its outer product.
fn gaussian_kernel() -> [f64; SSIM_WINDOW] {
    let centre = (SSIM_WINDOW / 2) as f64;
    let mut k = [0.0; SSIM_WINDOW];
    for (i, v) in k.iter_mut().enumerate() {
        *v = (-(i as f64 - centre).powi(2) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let sum: f64 = k.iter().sum();
    k.map(|v| v / sum)
}

/// Separable 'valid' filtering of a row-major w x h image: (w-10) x (h-10) outputs.
fn filter_valid(img: &[f64], w: usize, h: usize, k: &[f64; SSIM_WINDOW]) -> Vec<f64> {
    let (ow, oh) = (w + 1 - SSIM_WINDOW, h + 1 - SSIM_WINDOW);
    let mut rows = vec![0.0; ow * h];
    for y in 0..h {
        for x in 0..ow {
            rows[y * ow + x] = (0..SSIM_WINDOW).map(|i| k[i] * img[y * w + x + i]).sum();
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..SSIM_WINDOW).map(|i| k[i] * rows[(y + i) * ow + x]).sum();
        }
    }
    out
}
