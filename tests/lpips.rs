//! The LPIPS weights file: what it holds, and the errors a wrong one gives; LPIPS without one is
//! reported unavailable and weighs nothing.

mod common;

use common::{random_dataset, TempDir};
use infnerf::config::Config;
use infnerf::lpips::{weight_offsets, weight_tensors, LpipsWeights, Plan};
use infnerf::trainer::Trainer;
use std::path::Path;

/// Writes a safetensors file of `tensors` (name, shape, values).
fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

/// The tensors of `weights` as a converter writes them, the heads in PyTorch's [1, C, 1, 1].
fn tensors_of(weights: &LpipsWeights) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    weight_tensors()
        .into_iter()
        .map(|(name, shape, offset)| {
            let n: usize = shape.iter().product();
            let shape = if name.starts_with("lin") { vec![1, shape[0], 1, 1] } else { shape };
            (name, shape, weights.values[offset..offset + n].to_vec())
        })
        .collect()
}

#[test]
fn the_network_has_alexnets_shapes() {
    // torchvision's AlexNet features and LPIPS's heads: 2,469,696 convolution weights and biases,
    // 1,152 head weights
    assert_eq!(weight_offsets().total, 2_469_696 + 1_152);
    let plan = Plan::new(64).unwrap();
    let sizes: Vec<(u32, u32)> = plan.tensors.iter().map(|t| (t.channels, t.size)).collect();
    assert_eq!(sizes, [(3, 64), (64, 15), (64, 7), (192, 7), (192, 3), (384, 3), (256, 3), (256, 3)]);
    assert_eq!(plan.features, [1, 3, 5, 6, 7]);
    let smallest = Plan::new(infnerf::lpips::MIN_SIZE).unwrap();
    assert!(smallest.tensors.iter().all(|t| t.size >= 1));
    let err = Plan::new(infnerf::lpips::MIN_SIZE - 1).unwrap_err().to_string();
    assert!(err.contains("at least 31 pixels"), "{err}");
}

#[test]
fn weights_files_load_and_wrong_ones_are_named() {
    let dir = TempDir::new("lpips-weights");
    let weights = LpipsWeights::random(3);
    // the converter's layout (heads as [1, C, 1, 1]) and save's give the same weights
    let converted = dir.0.join("converted.safetensors");
    write(&converted, &tensors_of(&weights));
    assert_eq!(LpipsWeights::load(&converted).unwrap(), weights);
    let saved = dir.0.join("saved.safetensors");
    weights.save(&saved).unwrap();
    assert_eq!(LpipsWeights::load(&saved).unwrap(), weights);

    let fails = |tensors: Vec<(String, Vec<usize>, Vec<f32>)>, expected: &[&str]| {
        let path = dir.0.join("bad.safetensors");
        write(&path, &tensors);
        let err = format!("{:#}", LpipsWeights::load(&path).unwrap_err());
        assert!(err.contains("bad.safetensors"), "{err}");
        for part in expected {
            assert!(err.contains(part), "{err} lacks {part}");
        }
    };
    let mut missing = tensors_of(&weights);
    missing.retain(|(name, _, _)| name != "conv3.bias");
    fails(missing, &["no tensor conv3.bias"]);
    let mut wrong = tensors_of(&weights);
    wrong[0].1 = vec![64, 3, 121];
    fails(wrong, &["conv1.weight", "shape [64, 3, 121]", "[64, 3, 11, 11]"]);
    let mut nan = tensors_of(&weights);
    nan[4].2[7] = f32::NAN;
    fails(nan, &["conv3.weight", "non-finite"]);

    let garbage = dir.0.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let err = format!("{:#}", LpipsWeights::load(&garbage).unwrap_err());
    assert!(err.contains("garbage.safetensors") && err.contains("not a valid safetensors file"), "{err}");
    let err = format!("{:#}", LpipsWeights::load(&dir.0.join("absent.safetensors")).unwrap_err());
    assert!(err.contains("absent.safetensors"), "{err}");
}

/// A config names the weights relative to itself; LPIPS on squares it cannot see is refused.
#[test]
fn configs_name_the_weights_and_need_large_enough_squares() {
    let dir = TempDir::new("lpips-config");
    let path = dir.0.join("run.toml");
    let text = "[loss]\nlambda_lpips = 0.1\nlpips_weights = \"nets/lpips.safetensors\"\n\
                [train]\nstructure_patches = 2\nstructure_patch_size = 32\n";
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.loss.lpips_weights.unwrap(), dir.0.join("nets/lpips.safetensors"));
    let small = text.replace("structure_patch_size = 32", "structure_patch_size = 16");
    let err = Config::from_toml(&small, "run.toml").unwrap_err().to_string();
    assert!(
        err.contains("run.toml") && err.contains("loss.lambda_lpips") && err.contains("structure_patch_size"),
        "{err}"
    );
}

/// Without a weights file LPIPS weighs 0 whatever its lambda, says why, and runs no pass; with one
/// it runs (and a wrong file stops the trainer with the file's name).
#[test]
fn lpips_without_weights_is_unavailable_and_costs_nothing() {
    let dataset = random_dataset(3, 40, 2);
    let mut config = Config::tiny();
    config.train.structure_patches = 1;
    config.train.structure_patch_size = 32;
    config.loss.lambda_lpips = 0.5;
    let mut trainer = Trainer::new(common::gpu(), config.clone(), &dataset).unwrap();
    assert_eq!(trainer.term_weight("lpips", 0), 0.0);
    let reason = trainer.unavailable_terms().remove("lpips").expect("lpips is reported unavailable");
    assert!(reason.contains("loss.lpips_weights"), "{reason}");
    trainer.step().unwrap();
    let without = trainer.last_dispatches;
    let stats = trainer.read_stats().unwrap();
    assert!(stats.unavailable.contains_key("lpips"));

    let dir = TempDir::new("lpips-available");
    let path = dir.0.join("lpips.safetensors");
    LpipsWeights::random(1).save(&path).unwrap();
    config.loss.lpips_weights = Some(path.clone());
    let mut trainer = Trainer::new(common::gpu(), config.clone(), &dataset).unwrap();
    assert!(trainer.unavailable_terms().is_empty());
    assert_eq!(trainer.term_weight("lpips", 0), 0.5);
    trainer.step().unwrap();
    // input, 5 convolutions + 2 pools, the heads, 7 backward stages, loss_lpips
    assert_eq!(trainer.last_dispatches, without + 17);
    let stats = trainer.read_stats().unwrap();
    let lpips = &stats.terms.iter().find(|(name, _)| *name == "lpips").unwrap().1;
    assert!(lpips[0] > 0.0 && lpips[0].is_finite(), "{lpips:?}");

    std::fs::write(&path, b"corrupt").unwrap();
    let err = format!("{:#}", Trainer::new(common::gpu(), config, &dataset).err().unwrap());
    assert!(err.contains("lpips.safetensors"), "{err}");
}
