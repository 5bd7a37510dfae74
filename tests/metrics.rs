//! PSNR, MSE and SSIM against known values and a naive SSIM written out in full.

use infnerf::data::Image;
use infnerf::metrics::{mse, psnr, ssim};

/// A smooth test pattern with some texture, deterministic.
fn pattern(width: u32, height: u32, phase: f32) -> Image {
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                let v = 0.5 + 0.4 * ((x as f32 * 0.3 + phase).sin() * (y as f32 * 0.2 + c as f32).cos());
                rgb.push(v);
            }
        }
    }
    Image { width, height, rgb, alpha: Vec::new() }
}

/// Adds deterministic pseudo-random noise of amplitude `amp`, clamped to [0,1].
fn noisy(image: &Image, amp: f32, seed: u64) -> Image {
    let mut state = seed;
    let rgb = image
        .rgb
        .iter()
        .map(|&v| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let r = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            (v + amp * r).clamp(0.0, 1.0)
        })
        .collect();
    Image { rgb, ..image.clone() }
}

/// SSIM by the definition: for each window position, 2D-weighted moments summed directly.
fn naive_ssim(a: &Image, b: &Image) -> f64 {
    let (w, h) = (a.width as usize, a.height as usize);
    let g: Vec<f64> = (-5..=5).map(|i: i32| (-(i * i) as f64 / 4.5).exp()).collect();
    let norm: f64 = g.iter().flat_map(|x| g.iter().map(move |y| x * y)).sum();
    let mut total = 0.0;
    let mut count = 0usize;
    for c in 0..3 {
        for oy in 0..=h - 11 {
            for ox in 0..=w - 11 {
                let (mut mx, mut my, mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for j in 0..11 {
                    for i in 0..11 {
                        let k = g[i] * g[j] / norm;
                        let idx = ((oy + j) * w + ox + i) * 3 + c;
                        let (p, q) = (a.rgb[idx] as f64, b.rgb[idx] as f64);
                        mx += k * p;
                        my += k * q;
                        xx += k * p * p;
                        yy += k * q * q;
                        xy += k * p * q;
                    }
                }
                let (vx, vy, cov) = (xx - mx * mx, yy - my * my, xy - mx * my);
                let (c1, c2) = (1e-4, 9e-4);
                total += (2.0 * mx * my + c1) * (2.0 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
                count += 1;
            }
        }
    }
    total / count as f64
}

#[test]
fn psnr_known_values() {
    assert!((psnr(1.0) - 0.0).abs() < 1e-12);
    assert!((psnr(0.01) - 20.0).abs() < 1e-12);
    assert!((psnr(1e-3) - 30.0).abs() < 1e-12);
    assert!((psnr(0.0) - 100.0).abs() < 1e-12, "a perfect match is capped, finite");
    assert!(psnr(f64::NAN).is_nan());
    assert!(psnr(-1.0).is_nan());
}

#[test]
fn mse_known_values() {
    assert_eq!(mse(&[0.0, 1.0], &[0.0, 1.0]), 0.0);
    assert!((mse(&[0.0, 0.0, 0.0, 0.0], &[0.1, 0.1, 0.1, 0.1]) - 0.01).abs() < 1e-9);
    assert!((psnr(mse(&[0.5; 12], &[0.6; 12])) - 20.0).abs() < 1e-5);
    assert!(mse(&[0.0], &[0.0, 1.0]).is_nan());
    assert!(mse(&[], &[]).is_nan());
}

#[test]
fn ssim_identical_is_one() {
    let a = pattern(32, 24, 0.0);
    assert!((ssim(&a, &a) - 1.0).abs() < 1e-12);
}

#[test]
fn ssim_noisy_is_below_one_and_symmetric() {
    let a = pattern(40, 30, 0.0);
    let b = noisy(&a, 0.2, 7);
    let ab = ssim(&a, &b);
    assert!(ab < 0.99 && ab > 0.0, "{ab}");
    assert!((ab - ssim(&b, &a)).abs() < 1e-12);
    let worse = ssim(&a, &noisy(&a, 0.6, 7));
    assert!(worse < ab, "more noise, lower SSIM: {worse} vs {ab}");
}

#[test]
fn ssim_matches_naive_definition() {
    let a = pattern(23, 17, 0.0);
    let b = noisy(&pattern(23, 17, 0.4), 0.1, 3);
    let fast = ssim(&a, &b);
    let slow = naive_ssim(&a, &b);
    assert!((fast - slow).abs() < 1e-10, "{fast} vs {slow}");
}

#[test]
fn ssim_bad_sizes_are_nan() {
    let a = pattern(20, 20, 0.0);
    assert!(ssim(&a, &pattern(20, 21, 0.0)).is_nan());
    assert!(ssim(&pattern(10, 20, 0.0), &pattern(10, 20, 0.0)).is_nan(), "smaller than the window");
    let broken = Image { rgb: vec![0.0; 5], ..a.clone() };
    assert!(ssim(&a, &broken).is_nan());
}
