//! The frame list of a transforms JSON file, shared by the Blender and instant-ngp / nerfstudio formats.

use super::intrinsics::IntrinsicsSpec;
use super::json::{read_json, Obj};
use super::pose::{read_pose, Pose};
use super::DataError;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One frame whose image file exists (not yet decoded).
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// Position in the file's `frames` array.
    pub index: usize,
    /// `frames[i]`, for messages.
    pub field: String,
    /// `file_path` as written.
    pub file_path: String,
    pub image: PathBuf,
    /// The image path relative to the JSON's folder, for messages and `View::name`.
    pub name: String,
    pub pose: Pose,
    /// The frame's intrinsics over the file's global ones.
    pub intrinsics: IntrinsicsSpec,
}

/// What to do with a frame whose image file does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnMissing {
    Fail,
    Skip,
}

pub(crate) struct Transforms {
    pub file: PathBuf,
    pub root: Value,
    pub frames: Vec<Frame>,
    /// `file_path`s of the frames skipped because their image is missing.
    pub missing: Vec<String>,
}

/// Reads `file`; each frame's image is looked for at `file_path` + each suffix of `suffixes`, in order.
pub(crate) fn read_transforms(file: &Path, suffixes: &[&str], on_missing: OnMissing) -> Result<Transforms, DataError> {
    let root = read_json(file)?;
    let top = Obj::root(file, &root)?;
    let global = IntrinsicsSpec::parse(&top)?;
    let folder = file.parent().unwrap_or(Path::new("."));
    let mut frames = Vec::new();
    let mut missing = Vec::new();
    for (index, value) in top.array("frames")?.iter().enumerate() {
        let field = format!("frames[{index}]");
        let obj = top.element(value, &field)?;
        let file_path = obj.str("file_path")?;
        let pose = read_pose(&obj, "transform_matrix")?;
        let intrinsics = IntrinsicsSpec::parse(&obj)?.over(&global);
        let Some(image) = find_image(folder, file_path, suffixes) else {
            if on_missing == OnMissing::Skip {
                missing.push(file_path.to_string());
                continue;
            }
            let tried = suffixes.iter().map(|s| folder.join(format!("{file_path}{s}")).display().to_string());
            return Err(DataError::MissingImage {
                file: file.to_path_buf(),
                field: obj.field("file_path"),
                tried: tried.collect::<Vec<_>>().join(", "),
            });
        };
        let name = image.strip_prefix(folder).unwrap_or(&image).display().to_string();
        let file_path = file_path.to_string();
        frames.push(Frame { index, field, file_path, image, name, pose, intrinsics });
    }
    let unmodelled = frames.iter().filter(|f| f.intrinsics.unmodelled).count();
    if unmodelled > 0 {
        log::warn!("{}: k3/k4 of {unmodelled} frames ignored: only k1, k2, p1, p2 are modelled", file.display());
    }
    Ok(Transforms { file: file.to_path_buf(), root, frames, missing })
}

fn find_image(folder: &Path, file_path: &str, suffixes: &[&str]) -> Option<PathBuf> {
    suffixes.iter().map(|s| folder.join(format!("{file_path}{s}"))).find(|p| p.is_file())
}
