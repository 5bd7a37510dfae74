//! Files the trainer writes: atomic writes, the metrics.jsonl log, safetensors checkpoints.

use anyhow::{anyhow, bail, Context};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// File name of the checkpoint in a run folder: tensors and their metadata in one file.
pub const CHECKPOINT_TENSORS: &str = "checkpoint.safetensors";
/// Key of the safetensors header's `__metadata__` map that holds the checkpoint's JSON (config, step,
/// tree layout) as text.
pub const CHECKPOINT_METADATA_KEY: &str = "infnerf";
/// The JSON sidecar of the old two-file format, read only for checkpoints without embedded metadata.
pub const CHECKPOINT_SIDECAR: &str = "checkpoint.json";

/// Writes `bytes` to `path` so readers see the old file or the new one, never a torn one.
///
/// Writes `<path>.tmp-<pid>` in the same folder (so the rename cannot cross file systems),
/// syncs it, then renames it over `path`. Creates missing parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)?;
    }
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        ));
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: a failed write should not leave its temp file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // Persist the rename itself; not every platform can open a folder, so this is best effort.
    if let Ok(dir) = File::open(parent.unwrap_or(Path::new("."))) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// metrics.jsonl: one JSON object per line, flushed per line so a crash loses at most one.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Creates (or truncates) the log, creating missing parent folders.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        Ok(Self { path: path.to_path_buf(), out: BufWriter::new(File::create(path)?) })
    }

    /// Appends `record` (serialised on one line) and flushes.
    pub fn append<T: Serialize + ?Sized>(&mut self, record: &T) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record).map_err(std::io::Error::other)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes the checkpoint `path` (a .safetensors file): f32 tensors, with `metadata` as JSON text under
/// `__metadata__.infnerf` in the header, so tensors and metadata are replaced together by one atomic write.
///
/// Tensors are `(name, shape, data)`; the data length must equal the shape's product and names
/// must be unique.
pub fn save_checkpoint(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: &serde_json::Value,
) -> anyhow::Result<()> {
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, shape, data) in tensors {
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if count != Some(data.len()) {
            bail!("checkpoint tensor {name}: shape {shape:?} does not match its {} values", data.len());
        }
        if bytes.iter().any(|(n, _, _)| n == name) {
            bail!("checkpoint tensor {name}: the name is used twice");
        }
        bytes.push((name.to_string(), shape.clone(), data.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data)
                .with_context(|| format!("checkpoint tensor {name}"))?;
            Ok((name.as_str(), view))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let text = serde_json::to_string(metadata).context("serialising the checkpoint metadata")?;
    let header = HashMap::from([(CHECKPOINT_METADATA_KEY.to_string(), text)]);
    let file = safetensors::tensor::serialize(views, Some(header)).context("serialising the checkpoint")?;
    write_atomic(path, &file).with_context(|| format!("{}: cannot write", path.display()))
}

/// One loaded tensor: name, shape, values.
pub type LoadedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads a checkpoint's f32 tensors (sorted by name) and its metadata JSON.
///
/// The metadata is `__metadata__.infnerf` of the header; a checkpoint of the old two-file format (no
/// such key) takes it from its sidecar, `<stem>.json` beside the file, else `checkpoint.json` there.
/// Errors name the file and, where one is at fault, the tensor or field.
pub fn load_checkpoint(path: &Path) -> anyhow::Result<(Vec<LoadedTensor>, serde_json::Value)> {
    let shown = path.display();
    let file = std::fs::read(path).with_context(|| format!("{shown}: cannot read"))?;
    // SafeTensors keeps its header private: the `__metadata__` map comes from a second (small) parse.
    let (_, header) =
        SafeTensors::read_metadata(&file).map_err(|e| anyhow!("{shown}: not a valid safetensors file: {e}"))?;
    let st = SafeTensors::deserialize(&file).map_err(|e| anyhow!("{shown}: not a valid safetensors file: {e}"))?;
    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.iter() {
        if view.dtype() != Dtype::F32 {
            bail!("{shown}: tensor {name}: dtype {} where f32 was expected", view.dtype());
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        tensors.push((name.to_string(), view.shape().to_vec(), values));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = match header.metadata().as_ref().and_then(|m| m.get(CHECKPOINT_METADATA_KEY)) {
        Some(text) => serde_json::from_str(text)
            .with_context(|| format!("{shown}: __metadata__.{CHECKPOINT_METADATA_KEY}: not valid JSON"))?,
        None => read_old_sidecar(path)?,
    };
    Ok((tensors, metadata))
}

/// The metadata of an old-format checkpoint: `<stem>.json` beside it, else `checkpoint.json` there.
fn read_old_sidecar(path: &Path) -> anyhow::Result<serde_json::Value> {
    let same_stem = path.with_extension("json");
    let default = path.with_file_name(CHECKPOINT_SIDECAR);
    let Some(sidecar) = [same_stem.clone(), default].into_iter().find(|p| p.is_file()) else {
        bail!(
            "{}: no checkpoint metadata: the header has no __metadata__.{CHECKPOINT_METADATA_KEY}, and no \
             old-format sidecar ({} or {CHECKPOINT_SIDECAR}) exists beside it",
            path.display(),
            same_stem.display()
        );
    };
    let text = std::fs::read(&sidecar).with_context(|| format!("{}: cannot read", sidecar.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not valid JSON", sidecar.display()))
}
