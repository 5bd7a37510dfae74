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
fn checkpoint_round_trip() {
    let dir = scratch("roundtrip");
    let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
    let b = vec![f32::MAX, f32::MIN_POSITIVE, -0.0];
    let sidecar = json!({"step": 42, "config": {"max_depth": 2}, "tree": [1, 2, 3]});
    save_checkpoint(&dir, &[("node1.mlp", vec![2, 3], &a), ("node0.hash", vec![3], &b)], &sidecar).unwrap();
    assert_eq!(names_in(&dir), vec!["checkpoint.json", "checkpoint.safetensors"]);
    let (tensors, back) = load_checkpoint(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(back, sidecar);
    assert_eq!(tensors, vec![("node0.hash".to_string(), vec![3], b), ("node1.mlp".to_string(), vec![2, 3], a)]);
}

#[test]
fn sidecar_with_same_stem_is_found() {
    let dir = scratch("stem");
    save_checkpoint(&dir, &[("x", vec![1], &[1.0])], &json!({"step": 1})).unwrap();
    std::fs::rename(dir.join("checkpoint.safetensors"), dir.join("step9.safetensors")).unwrap();
    std::fs::write(dir.join("step9.json"), r#"{"step": 9}"#).unwrap();
    let (_, sidecar) = load_checkpoint(&dir.join("step9.safetensors")).unwrap();
    assert_eq!(sidecar, json!({"step": 9}));
}

#[test]
fn bad_tensors_are_refused_on_save() {
    let dir = scratch("badsave");
    let err = save_checkpoint(&dir, &[("w", vec![2, 2], &[1.0; 3])], &json!({})).unwrap_err().to_string();
    assert!(err.contains("w") && err.contains("shape"), "{err}");
    let err = save_checkpoint(&dir, &[("w", vec![1], &[1.0]), ("w", vec![1], &[2.0])], &json!({})).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let err = save_checkpoint(&dir, &[("w", vec![usize::MAX, 4], &[1.0])], &json!({})).unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
}

#[test]
fn truncated_checkpoint_is_an_error_naming_the_file() {
    let dir = scratch("truncated");
    let data = vec![0.25f32; 100];
    save_checkpoint(&dir, &[("weights", vec![10, 10], &data)], &json!({"step": 3})).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for keep in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load_checkpoint(&path).expect_err("truncated file must fail");
        assert!(format!("{err:#}").contains("checkpoint.safetensors"), "{err:#}");
    }
    // Garbage in the header length.
    let mut bad = bytes.clone();
    bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(load_checkpoint(&path).is_err());
}

#[test]
fn non_f32_tensor_is_an_error_naming_it() {
    let dir = scratch("dtype");
    let path = dir.join("checkpoint.safetensors");
    let data = [0u8; 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![1], &data).unwrap();
    std::fs::write(&path, safetensors::tensor::serialize([("counts", view)], None).unwrap()).unwrap();
    std::fs::write(dir.join("checkpoint.json"), "{}").unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("counts") && err.contains("checkpoint.safetensors"), "{err}");
}

#[test]
fn missing_or_corrupt_sidecar_is_an_error() {
    let dir = scratch("sidecar");
    save_checkpoint(&dir, &[("x", vec![2], &[1.0, 2.0])], &json!({"step": 1})).unwrap();
    let path = dir.join("checkpoint.safetensors");
    std::fs::write(dir.join("checkpoint.json"), "{\"step\": ").unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("checkpoint.json"), "{err}");
    std::fs::remove_file(dir.join("checkpoint.json")).unwrap();
    let err = format!("{:#}", load_checkpoint(&path).unwrap_err());
    assert!(err.contains("sidecar") && err.contains("checkpoint.json"), "{err}");
    let err = format!("{:#}", load_checkpoint(&dir.join("absent.safetensors")).unwrap_err());
    assert!(err.contains("absent.safetensors"), "{err}");
}
