//! How far images shrink while they are decoded: the factor the settings give, or, when they leave it
//! automatic (0), the smallest power of two at which the decoded dataset fits in host memory.

use super::DataError;
use std::fmt;
use std::path::{Path, PathBuf};

/// Host bytes one loaded pixel takes: rgb and alpha as f32, plus the trainer's packed RGBA8 pyramid
/// (4 bytes at level 0, 4/3 of that over all levels).
const BYTES_PER_PIXEL: f64 = 3.0 * 4.0 + 4.0 + 4.0 * 4.0 / 3.0;

/// The automatic budget where /proc/meminfo cannot be read.
const FALLBACK_BUDGET: u64 = 8 << 30;

/// The factor images are shrunk by, and why, for messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Downscale {
    pub factor: u32,
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Reason {
    /// `data.downscale` (or `--downscale`) asked for it.
    Setting,
    /// Automatic: at full size the images would take `needed` bytes, over `budget`.
    Automatic { needed: u64, budget: u64 },
}

impl fmt::Display for Downscale {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.reason {
            Reason::Setting => write!(f, "data.downscale = {}", self.factor),
            Reason::Automatic { needed, budget } => {
                write!(f, "automatic: {} would not fit the {} budget", gib(needed), gib(budget))
            }
        }
    }
}

/// Resolves `setting` (0: automatic) for the images at `paths`. The automatic choice reads only the
/// files' headers, so no pixel is decoded twice.
pub(crate) fn choose(setting: u32, paths: &[PathBuf], budget: Option<u64>) -> Result<Downscale, DataError> {
    if setting > 0 {
        return Ok(Downscale { factor: setting, reason: Reason::Setting });
    }
    let sizes = paths.iter().map(|p| image_size(p)).collect::<Result<Vec<_>, _>>()?;
    let budget = budget.unwrap_or_else(memory_budget);
    let needed = held_bytes(&sizes, 1);
    if needed <= budget {
        return Ok(Downscale { factor: 1, reason: Reason::Setting });
    }
    let reason = Reason::Automatic { needed, budget };
    // Powers of two up to the limit, and no further than leaves the smallest image 1 pixel across.
    let smallest_side = sizes.iter().map(|&(w, h)| w.min(h)).min().unwrap_or(1).max(1);
    let largest = crate::config::MAX_DOWNSCALE.min(1 << smallest_side.ilog2());
    match (1..=largest.ilog2()).map(|k| 1 << k).find(|&f| held_bytes(&sizes, f) <= budget) {
        Some(factor) => Ok(Downscale { factor, reason }),
        None => {
            let message = format!(
                "is automatic (0), but the images need {} even at 1/{largest} size, over the {} budget",
                gib(held_bytes(&sizes, largest)),
                gib(budget)
            );
            Err(DataError::Options { field: "downscale", message })
        }
    }
}

/// Bytes the images of `sizes` take once loaded at 1/`factor` size.
pub(crate) fn held_bytes(sizes: &[(u32, u32)], factor: u32) -> u64 {
    let pixels: u64 = sizes.iter().map(|&(w, h)| u64::from(w / factor) * u64::from(h / factor)).sum();
    (pixels as f64 * BYTES_PER_PIXEL).ceil() as u64
}

/// Half of MemAvailable: the other half is left to the GPU driver, the viewer and everything else.
fn memory_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(mem_available).map_or(FALLBACK_BUDGET, |b| b / 2)
}

/// MemAvailable of a /proc/meminfo text, in bytes.
pub(crate) fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

fn image_size(path: &Path) -> Result<(u32, u32), DataError> {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|source| DataError::Read { file: path.to_path_buf(), source })?
        .into_dimensions()
        .map_err(|e| DataError::Decode { file: path.to_path_buf(), message: e.to_string() })
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::{held_bytes, mem_available};

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:        1000 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_available(text), Some(2048 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots\n"), None);
    }

    #[test]
    fn held_bytes_count_floored_sizes() {
        // 64 / 3 bytes per pixel: 9 pixels, then 1 + 2 * 2 = 5 pixels (106.7 bytes, rounded up).
        assert_eq!(held_bytes(&[(3, 3)], 1), 192);
        assert_eq!(held_bytes(&[(3, 3), (5, 4)], 2), 107);
    }
}
