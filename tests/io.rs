//! Atomic writes, the metrics log and checkpoint round trips, including corrupt files.

use infnerf::io::{load_checkpoint, save_checkpoint, write_atomic, MetricsLog};
use serde_json::json;
use std::path::PathBuf;

/// A fresh empty folder under the system temp dir, unique per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infnerf-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn atomic_write_creates_parents_and_leaves_no_temp_file() {
    let dir = scratch("atomic");
    let path = dir.join("a/b/file.txt");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    assert_eq!(names_in(&dir.join("a/b")), vec!["file.txt"]);
}

#[test]
fn metrics_log_writes_one_object_per_line() {
    let dir = scratch("metrics");
    let path = dir.join("run/metrics.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "old contents\n").unwrap();
    let mut log = MetricsLog::create(&path).unwrap();
    log.append(&json!({"step": 1, "loss": 0.5})).unwrap();
    log.append(&json!({"step": 2, "loss": 0.25})).unwrap();
    // Flushed per line: readable before the log is dropped.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, vec![json!({"step": 1, "loss": 0.5}), json!({"step": 2, "loss": 0.25})]);
    assert_eq!(log.path(), path);
}

#[test]
fn checkpoint_round_trip_is_one_file() {
    let dir = scratch("roundtrip");
    let path = dir.join("checkpoint.safetensors");
    let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
    let b = vec![f32::MAX, f32::MIN_POSITIVE, -0.0];
    let metadata = json!({"step": 42, "config": {"max_depth": 2}, "tree": [1, 2, 3], "text": "quote \" and \\"});
    save_checkpoint(&path, &[("node1.mlp", vec![2, 3], &a), ("node0.hash", vec![3], &b)], &metadata).unwrap();
    // Saving again replaces it in place: still one file, no temp file left behind.
    save_checkpoint(&path, &[("node1.mlp", vec![2, 3], &a), ("node0.hash", vec![3], &b)], &metadata).unwrap();
    assert_eq!(names_in(&dir), vec!["checkpoint.safetensors"]);
    let (tensors, back) = load_checkpoint(&path).unwrap();
    assert_eq!(back, metadata);
    assert_eq!(tensors, vec![("node0.hash".to_string(), vec![3], b), ("node1.mlp".to_string(), vec![2, 3], a)]);
    // The metadata is a plain safetensors `__metadata__` entry that other readers see.
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let text = header.metadata().as_ref().and_then(|m| m.get("infnerf")).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(text).unwrap(), metadata);
}

#[test]
fn embedded_metadata_wins_over_a_stale_sidecar() {
    let dir = scratch("stale");
    let path = dir.join("step9.safetensors");
    save_checkpoint(&path, &[("x", vec![1], &[1.0])], &json!({"step": 9})).unwrap();
    std::fs::write(dir.join("step9.json"), r#"{"step": 1}"#).unwrap();
    std::fs::write(dir.join("checkpoint.json"), r#"{"step": 2}"#).unwrap();
    let (_, metadata) = load_checkpoint(&path).unwrap();
    assert_eq!(metadata, json!({"step": 9}));
}

/// A checkpoint as the old two-file format wrote it: tensors without metadata, JSON beside them.
fn write_old_format(path: &std::path::Path) {
    let data = 1.5f32.to_le_bytes();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
    std::fs::write(path, safetensors::tensor::serialize([("x", view)], None).unwrap()).unwrap();
}

#[test]
fn old_format_reads_its_sidecar() {
    let dir = scratch("old");
    let path = dir.join("checkpoint.safetensors");
    write_old_format(&path);
    std::fs::write(dir.join("checkpoint.json"), r#"{"step": 5}"#).unwrap();
    let (tensors, metadata) = load_checkpoint(&path).unwrap();
    assert_eq!((tensors, metadata), (vec![("x".to_string(), vec![1], vec![1.5])], json!({"step": 5})));
    // `<stem>.json` first, then checkpoint.json.
    std::fs::rename(&path, dir.join("step9.safetensors")).unwrap();
    let (_, metadata) = load_checkpoint(&dir.join("step9.safetensors")).unwrap();
    assert_eq!(metadata, json!({"step": 5}));
    std::fs::write(dir.join("step9.json"), r#"{"step": 9}"#).unwrap();
    let (_, metadata) = load_checkpoint(&dir.join("step9.safetensors")).unwrap();
    assert_eq!(metadata, json!({"step": 9}));
}

#[test]
fn old_format_with_missing_or_corrupt_sidecar_is_an_error() {
    let dir = scratch("sidecar");
    let path = dir.join("checkpoint.safetensors");
    write_old_format(&path);
    std::fs::write(dir.join("checkpoint.json"), "{\"step\": ").unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("checkpoint.json: not valid JSON"), "{err}");
    std::fs::remove_file(dir.join("checkpoint.json")).unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("checkpoint.safetensors") && err.contains("__metadata__.infnerf"), "{err}");
    assert!(err.contains("checkpoint.json"), "{err}");
    let err = format!("{:#}", load_checkpoint(&dir.join("absent.safetensors")).unwrap_err());
    assert!(err.contains("absent.safetensors"), "{err}");
}

#[test]
fn bad_embedded_metadata_names_the_file_and_field() {
    let dir = scratch("badmeta");
    let path = dir.join("run.safetensors");
    let data = 1.5f32.to_le_bytes();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
    let metadata = std::collections::HashMap::from([("infnerf".to_string(), "{\"step\": ".to_string())]);
    std::fs::write(&path, safetensors::tensor::serialize([("x", view)], Some(metadata)).unwrap()).unwrap();
    // A sidecar does not rescue a file whose own metadata is broken.
    std::fs::write(dir.join("run.json"), r#"{"step": 1}"#).unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("run.safetensors: __metadata__.infnerf: not valid JSON"), "{err}");
}

#[test]
fn bad_tensors_are_refused_on_save() {
    let dir = scratch("badsave");
    let path = dir.join("checkpoint.safetensors");
    let err = save_checkpoint(&path, &[("w", vec![2, 2], &[1.0; 3])], &json!({})).unwrap_err().to_string();
    assert!(err.contains("w") && err.contains("shape"), "{err}");
    let err = save_checkpoint(&path, &[("w", vec![1], &[1.0]), ("w", vec![1], &[2.0])], &json!({})).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let err = save_checkpoint(&path, &[("w", vec![usize::MAX, 4], &[1.0])], &json!({})).unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
    assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
}

#[test]
fn corrupt_checkpoint_is_an_error_naming_the_file() {
    let dir = scratch("truncated");
    let path = dir.join("checkpoint.safetensors");
    let data = vec![0.25f32; 100];
    save_checkpoint(&path, &[("weights", vec![10, 10], &data)], &json!({"step": 3})).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for keep in [0, 4, 8, 20, 8 + header_len / 2, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load_checkpoint(&path).expect_err("truncated file must fail");
        assert!(format!("{err:#}").contains("checkpoint.safetensors"), "{err:#}");
    }
    // Garbage in the header length, and a header that is not JSON.
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(format!("{:#}", load_checkpoint(&path).unwrap_err()).contains("checkpoint.safetensors"));
    let mut bad = bytes.clone();
    bad[8] = b'[';
    std::fs::write(&path, &bad).unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("checkpoint.safetensors: not a valid safetensors file"), "{err}");
    // `__metadata__` must be a map of strings.
    let text = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    let quoted = r#""{\"step\":3}""#;
    let object = format!("{:width$}", r#"{"step":3}"#, width = quoted.len());
    let header = text.replacen(quoted, &object, 1);
    assert!(header != text && header.len() == header_len, "{text}");
    let mut bad = bytes.clone();
    bad[8..8 + header_len].copy_from_slice(header.as_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("checkpoint.safetensors: not a valid safetensors file"), "{err}");
}

#[test]
fn non_f32_tensor_is_an_error_naming_it() {
    let dir = scratch("dtype");
    let path = dir.join("checkpoint.safetensors");
    let data = [0u8; 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![1], &data).unwrap();
    let metadata = std::collections::HashMap::from([("infnerf".to_string(), "{}".to_string())]);
    std::fs::write(&path, safetensors::tensor::serialize([("counts", view)], Some(metadata)).unwrap()).unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("counts") && err.contains("checkpoint.safetensors"), "{err}");
}
