//! Decoding image files in parallel, compositing their alpha onto the background and shrinking each by
//! the dataset's downscale factor as it is decoded, so full-size pixels of only one image per thread
//! are ever held.

use super::downscale::{self, Downscale};
use super::{DataError, Image, LoadOptions};
use std::path::{Path, PathBuf};

/// An image as loaded, with the size of its file, which is what a transforms file's `w`/`h` describe.
pub(crate) struct Decoded {
    pub image: Image,
    pub full_size: (u32, u32),
}

/// The images of one dataset and the factor they were shrunk by.
pub(crate) struct DecodedSet {
    pub images: Vec<Decoded>,
    pub downscale: Downscale,
}

/// Decodes every file of the dataset in `dir` at the factor `opts` asks for (or the automatic one), one
/// chunk per available core; the first failure (in `paths` order) is returned. Logs any shrinking.
pub(crate) fn decode_images(dir: &Path, paths: &[PathBuf], opts: &LoadOptions) -> Result<DecodedSet, DataError> {
    let downscale = downscale::choose(opts.downscale, paths, opts.memory_budget)?;
    let images = decode_all(paths, opts.background, downscale)?;
    report(dir, &images, downscale);
    Ok(DecodedSet { images, downscale })
}

fn decode_all(paths: &[PathBuf], background: [f32; 3], downscale: Downscale) -> Result<Vec<Decoded>, DataError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(paths.len());
    let chunk = paths.len().div_ceil(threads);
    let results: Vec<Vec<Result<Decoded, DataError>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || chunk.iter().map(|p| decode_image(p, background, downscale)).collect::<Vec<_>>())
            })
            .collect();
        workers
            .into_iter()
            .zip(paths.chunks(chunk))
            .map(|(worker, chunk)| {
                // A decoder that panics on a hostile file must become an error, not take the program down.
                worker.join().unwrap_or_else(|_| {
                    let message = "the decoder panicked on this file or one beside it".to_string();
                    vec![Err(DataError::Decode { file: chunk[0].clone(), message })]
                })
            })
            .collect()
    });
    results.into_iter().flatten().collect()
}

/// One log line when the images changed size: "dir: downscaled 50 images 1080x1920 -> 540x960 (why)".
fn report(dir: &Path, images: &[Decoded], downscale: Downscale) {
    let Some(first) = images.first().filter(|_| downscale.factor > 1) else { return };
    let (w, h) = first.full_size;
    let sizes = if images.iter().all(|d| d.full_size == first.full_size) {
        format!("{w}x{h} -> {}x{}", first.image.width, first.image.height)
    } else {
        format!("of several sizes (the first {w}x{h} -> {}x{})", first.image.width, first.image.height)
    };
    let message = format!("{}: downscaled {} images {sizes} ({downscale})", dir.display(), images.len());
    match downscale.reason {
        downscale::Reason::Setting => log::info!("{message}"),
        downscale::Reason::Automatic { .. } => log::warn!("{message}"),
    }
}

/// Straight (not premultiplied) alpha: rgb * a + background * (1 - a); then each output pixel is the
/// mean of its factor x factor block of composited colours, and alpha the mean of the block's alphas.
pub(crate) fn decode_image(path: &Path, background: [f32; 3], downscale: Downscale) -> Result<Decoded, DataError> {
    let decode_error = |e: image::ImageError| DataError::Decode { file: path.to_path_buf(), message: e.to_string() };
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|source| DataError::Read { file: path.to_path_buf(), source })?;
    let rgba = reader.decode().map_err(decode_error)?.into_rgba32f();
    let (full_width, full_height) = rgba.dimensions();
    let n = downscale.factor.max(1);
    let (width, height) = (full_width / n, full_height / n);
    if width == 0 || height == 0 {
        return Err(DataError::ImageSize {
            file: path.to_path_buf(),
            width: full_width,
            height: full_height,
            expected: format!("shrinking it by {n} ({downscale}) leaves less than 1x1"),
        });
    }
    let (w, n) = (width as usize, n as usize);
    let full_row = full_width as usize * 4;
    let samples = rgba.as_raw();
    let mut rgb = Vec::with_capacity(w * height as usize * 3);
    let mut alpha = Vec::with_capacity(w * height as usize);
    // f64 sums: a 64 x 64 block of f32 values would lose digits in f32.
    let mut block_sums = vec![[0.0f64; 4]; w];
    let inverse_count = 1.0 / (n * n) as f64;
    for y in 0..height as usize {
        block_sums.fill([0.0; 4]);
        for row in samples[y * n * full_row..].chunks_exact(full_row).take(n) {
            // The columns right of w * n are the cropped remainder.
            for (x, pixel) in row[..w * n * 4].chunks_exact(4).enumerate() {
                let [r, g, b, a] = [pixel[0], pixel[1], pixel[2], pixel[3]].map(|v| v.clamp(0.0, 1.0));
                let sum = &mut block_sums[x / n];
                for (k, (c, bg)) in [r, g, b].into_iter().zip(background).enumerate() {
                    sum[k] += f64::from(c * a + bg * (1.0 - a));
                }
                sum[3] += f64::from(a);
            }
        }
        for sum in &block_sums {
            rgb.extend(sum[..3].iter().map(|s| (s * inverse_count) as f32));
            alpha.push((sum[3] * inverse_count) as f32);
        }
    }
    if alpha.iter().all(|&a| a == 1.0) {
        alpha.clear();
    }
    Ok(Decoded { image: Image { width, height, rgb, alpha }, full_size: (full_width, full_height) })
}
