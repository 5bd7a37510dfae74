//! The default scene, compiled into the binary (see build.rs) and unpacked to a temp folder on demand.

use anyhow::Context;
use std::path::{Path, PathBuf};

mod files {
    include!(concat!(env!("OUT_DIR"), "/default_scene.rs"));
}

/// A folder holding the embedded default scene (Blender format, 64x64, 40 train / 10 test views).
/// Unpacked once per content hash under the temp dir; written beside it and renamed into place, so a
/// concurrent run sees either no folder or a complete one.
pub fn default_scene_dir() -> anyhow::Result<PathBuf> {
    anyhow::ensure!(!files::FILES.is_empty(), "this build embeds no default scene (assets/scene was empty)");
    let base = std::env::temp_dir();
    let dir = base.join(format!("infnerf-default-scene-{:016x}", files::HASH));
    if dir.is_dir() {
        return Ok(dir);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let staging = base.join(format!("infnerf-default-scene-{:016x}.tmp-{}-{nanos}", files::HASH, std::process::id()));
    let written = write_files(&staging);
    let result = written.and_then(|()| match std::fs::rename(&staging, &dir) {
        Ok(()) => Ok(()),
        // Another process finished first: its copy is as good as ours.
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot move into place", dir.display())),
    });
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| dir)
}

fn write_files(staging: &Path) -> anyhow::Result<()> {
    for (relative, bytes) in files::FILES {
        let path = staging.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}
