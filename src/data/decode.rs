//! Decoding image files in parallel and compositing their alpha onto the background.

use super::{DataError, Image};
use std::path::{Path, PathBuf};

/// Decodes every file, one chunk per available core; the first failure (in `paths` order) is returned.
pub(crate) fn decode_images(paths: &[PathBuf], background: [f32; 3]) -> Result<Vec<Image>, DataError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(paths.len());
    let chunk = paths.len().div_ceil(threads);
    let results: Vec<Vec<Result<Image, DataError>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|chunk| scope.spawn(move || chunk.iter().map(|p| decode_image(p, background)).collect::<Vec<_>>()))
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

/// Straight (not premultiplied) alpha: rgb * a + background * (1 - a).
pub(crate) fn decode_image(path: &Path, background: [f32; 3]) -> Result<Image, DataError> {
    let decode_error = |e: image::ImageError| DataError::Decode { file: path.to_path_buf(), message: e.to_string() };
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|source| DataError::Read { file: path.to_path_buf(), source })?;
    let rgba = reader.decode().map_err(decode_error)?.into_rgba32f();
    let (width, height) = rgba.dimensions();
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    let mut alpha = Vec::with_capacity(width as usize * height as usize);
    for pixel in rgba.pixels() {
        let [r, g, b, a] = pixel.0.map(|v| v.clamp(0.0, 1.0));
        alpha.push(a);
        for (c, bg) in [r, g, b].into_iter().zip(background) {
            rgb.push(c * a + bg * (1.0 - a));
        }
    }
    if alpha.iter().all(|&a| a == 1.0) {
        alpha.clear();
    }
    Ok(Image { width, height, rgb, alpha })
}
