//! Fine surface patterns, box-filtered analytically over a sample's footprint: exact at close range,
//! a smooth mean from afar, so that no view's supersampling shows moiré the others do not.

use super::geometry::{dot, V3};

/// A pattern that modulates an object's albedo: albedo * (1 + contrast * pattern), pattern in [-1, 1].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Detail {
    /// A checkerboard of squares `period / 2` on the box's faces (the shape's own frame, the two axes
    /// across the face).
    Checker { period: f64, contrast: f64 },
    /// Parallel stripes (a square wave) of `period` along `across`, a unit vector in the shape's frame.
    Stripes { period: f64, across: V3, contrast: f64 },
    /// Stripes as above, only on alternate `tile` x `tile` squares of the face (box shapes).
    TiledStripes { tile: f64, period: f64, across: V3, contrast: f64 },
}

impl Detail {
    /// The pattern at `local` (the shape's frame) on a face whose dominant local axis is `across_face`,
    /// box-filtered over a footprint of width `footprint`.
    pub fn value(&self, local: V3, across_face: usize, footprint: f64) -> f64 {
        match *self {
            Detail::Checker { period, contrast } => {
                let mut axes = (0..3).filter(|&k| k != across_face);
                let (a, b) = (axes.next().unwrap_or(0), axes.next().unwrap_or(1));
                contrast * square_wave(local[a], period, footprint) * square_wave(local[b], period, footprint)
            }
            Detail::Stripes { period, across, contrast } => {
                contrast * square_wave(dot(local, across), period, footprint)
            }
            Detail::TiledStripes { tile, period, across, contrast } => {
                let parity: i64 = (0..3).filter(|&k| k != across_face).map(|k| (local[k] / tile).floor() as i64).sum();
                if parity.rem_euclid(2) == 1 {
                    contrast * square_wave(dot(local, across), period, footprint)
                } else {
                    0.0
                }
            }
        }
    }
}

/// The square wave (+1 on the first half of each period, -1 on the second) averaged over
/// [x - w/2, x + w/2]: the difference of its integral (a triangle wave) across the window.
pub(crate) fn square_wave(x: f64, period: f64, w: f64) -> f64 {
    if w < 1e-6 * period {
        return if (x / period).rem_euclid(1.0) < 0.5 { 1.0 } else { -1.0 };
    }
    (triangle(x + 0.5 * w, period) - triangle(x - 0.5 * w, period)) / w
}

/// The integral of the square wave from 0 to x: rises to period/2 over the first half, falls back to 0.
fn triangle(x: f64, period: f64) -> f64 {
    let f = (x / period).rem_euclid(1.0);
    period * if f < 0.5 { f } else { 1.0 - f }
}

#[cfg(test)]
mod tests {
    use super::square_wave;

    #[test]
    fn filtered_square_wave_is_the_mean_over_the_window() {
        let (period, w) = (0.03, 0.011);
        for i in 0..50 {
            let x = -0.1 + 0.0073 * f64::from(i);
            let n = 20_000;
            let mean = (0..n)
                .map(|k| square_wave(x - 0.5 * w + w * (f64::from(k) + 0.5) / f64::from(n), period, 0.0))
                .sum::<f64>()
                / f64::from(n);
            assert!((square_wave(x, period, w) - mean).abs() < 1e-3, "x {x}");
        }
        // A window of whole periods averages to zero.
        assert!(square_wave(0.0123, period, 2.0 * period).abs() < 1e-12);
    }
}
