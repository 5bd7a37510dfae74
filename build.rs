//! Embeds `assets/scene` (the default scene) into the binary: writes `OUT_DIR/default_scene.rs` with
//! `FILES`, the (relative path, `include_bytes!`) pairs, and `HASH`, a content hash naming its folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.join("assets").join("scene");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=assets/scene");
    let mut files = Vec::new();
    if root.is_dir() {
        collect(&root, &mut files);
    }
    files.sort();
    // FNV-1a over every relative path and content: a new scene gets a new folder name.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut entries = String::new();
    for path in &files {
        let relative = path.strip_prefix(&root).expect("collected under root");
        let relative: Vec<_> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let relative = relative.join("/");
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for byte in relative.bytes().chain([0]).chain(bytes) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let absolute = path.to_str().unwrap_or_else(|| panic!("{}: path is not UTF-8", path.display()));
        writeln!(entries, "    ({relative:?}, include_bytes!({absolute:?})),").expect("writing to a String");
    }
    let code = format!(
        "/// Content hash of the embedded scene.\npub(super) const HASH: u64 = {hash:#018x};\n\
         /// (path relative to the scene folder, contents).\npub(super) const FILES: &[(&str, &[u8])] = &[\n{entries}];\n"
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("default_scene.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
