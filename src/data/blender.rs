//! The Blender synthetic format: `transforms_{train,val,test}.json`, `file_path` without extension.
//!
//! The scenes are modelled around the origin, so the cube is the box of half-edge `scene_bound` there:
//! centre 0, scale 1 / scene_bound (1.5 fits the NeRF synthetic scenes).

use super::decode::decode_images;
use super::transforms::{read_transforms, OnMissing, Transforms};
use super::views::assemble;
use super::{DataError, Dataset, LoadOptions};
use std::path::Path;

/// `.png` first: the benchmark's paths have no extension; some derived sets keep it in the path.
const SUFFIXES: [&str; 3] = [".png", "", ".jpg"];

pub(crate) const TRAIN_FILE: &str = "transforms_train.json";

pub(crate) fn load(dir: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let scale = 1.0 / f64::from(opts.scene_bound);
    let read = |split: &str, required: bool| -> Result<Option<Transforms>, DataError> {
        let file = dir.join(format!("transforms_{split}.json"));
        if !required && !file.exists() {
            return Ok(None);
        }
        read_transforms(&file, &SUFFIXES, OnMissing::Fail).map(Some)
    };
    let splits = [read("train", true)?, read("val", false)?, read("test", true)?];
    if let Some(train) = splits[0].as_ref().filter(|t| t.frames.is_empty()) {
        return Err(DataError::NoFrames { file: train.file.clone(), message: "frames is empty".into() });
    }
    // One parallel decode over every split keeps all cores busy.
    let paths: Vec<_> = splits.iter().flatten().flat_map(|t| t.frames.iter().map(|f| f.image.clone())).collect();
    let decoded = decode_images(dir, &paths, opts)?;
    let factor = decoded.downscale.factor;
    let mut images = decoded.images.into_iter();
    let mut next_split = |split: &Option<Transforms>| match split {
        None => Ok(Vec::new()),
        Some(t) => {
            let frames: Vec<_> = t.frames.iter().collect();
            let split_images = images.by_ref().take(frames.len()).collect();
            assemble(&t.file, &frames, split_images, factor, [0.0; 3], scale)
        }
    };
    let train = next_split(&splits[0])?;
    let val = next_split(&splits[1])?;
    let test = next_split(&splits[2])?;
    Ok(Dataset { train, val, test, centre: [0.0; 3], scale: scale as f32, background: opts.background })
}
