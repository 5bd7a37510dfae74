//! The sampling schedule (SPEC §5): stratified uniform samples, then samples resampled from a
//! coarse cut's proposal (hierarchical), then the same skipping empty cells (importance), trained end
//! to end on a generated scene.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use infnerf::config::{Config, SamplingPhase};
use infnerf::run::{train, TrainRequest};
use infnerf::scene_gen::{make_scene, SceneOptions};
use temp_dir::TempDir;

/// tiny.toml with the schedule: uniform for 40 steps, hierarchical until 80, importance after.
fn scheduled(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("scheduled.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/tiny.toml")).unwrap();
    let text = text.replace(
        "log_every = 25",
        "log_every = 10\noccupancy_warmup = 80\nhierarchical_from = 40\nproposal_samples = 32\nresample_samples = 12",
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_phases_follow_the_steps() {
    let mut t = Config::tiny().train;
    t.occupancy_warmup = 80;
    assert_eq!((t.sampling_phase(79), t.sampling_phase(80)), (SamplingPhase::Uniform, SamplingPhase::Occupancy));
    t.hierarchical_from = Some(40);
    let phases: Vec<SamplingPhase> = [0, 39, 40, 79, 80, 5000].iter().map(|&s| t.sampling_phase(s)).collect();
    use SamplingPhase::*;
    assert_eq!(phases, [Uniform, Uniform, Hierarchical, Hierarchical, Importance, Importance]);
    assert_eq!((t.samples_per_ray_at(39), t.samples_per_ray_at(40)), (t.samples_per_ray, t.resample_samples));
    // the batches hold the uniform phase's samples, or one cut's proposal, whichever is more
    t.proposal_samples = 200;
    assert_eq!(t.max_samples_per_ray(2), 100);
    t.hierarchical_from = Some(0);
    assert_eq!(t.max_samples_per_ray(1), 200, "no uniform phase: the proposal's room");
    t.hierarchical_from = None;
    assert_eq!(t.max_samples_per_ray(4), t.samples_per_ray);
    t.occupancy_resolution = 0;
    assert_eq!(t.sampling_phase(5000), Uniform, "no grid, no skipping");
}

#[test]
fn a_scheduled_run_goes_through_every_phase_and_trains() {
    let tmp = TempDir::new("sampling");
    let scene = tmp.0.join("scene");
    make_scene(&scene, &SceneOptions { width: 40, height: 40, train_views: 24, test_views: 4, seed: 3 }).unwrap();
    let request = |out: &str, steps: u32| TrainRequest {
        data: Some(scene.clone()),
        config: Some(scheduled(&tmp.0)),
        out: tmp.0.join(out),
        steps: Some(steps),
        ..Default::default()
    };
    let untrained = train(&request("untrained", 1)).unwrap();
    let trained = train(&request("trained", 300)).unwrap();
    assert!(trained.psnr >= untrained.psnr + 6.0, "PSNR {:.2} -> {:.2} dB", untrained.psnr, trained.psnr);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(tmp.0.join("trained/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l.get("event").is_none())
        .collect();
    let at =
        |step: u64| lines.iter().find(|l| l["step"].as_u64() == Some(step)).unwrap_or_else(|| panic!("step {step}"));
    let field = |line: &serde_json::Value, key: &str| line[key].as_f64().unwrap();
    let (uniform, hierarchical, importance) = (at(30), at(70), at(300));
    assert_eq!(uniform["sampling_phase"], "uniform");
    assert_eq!(hierarchical["sampling_phase"], "hierarchical");
    assert_eq!(importance["sampling_phase"], "importance");
    // uniform: every sample in the cube is evaluated, no proposal
    assert_eq!(field(uniform, "samples_proposal"), 0.0);
    assert!(field(uniform, "evaluated_per_ray") > 20.0, "{uniform}");
    // hierarchical: the proposal's 32 per ray (forward only), then 12 per ray and cut
    assert!(field(hierarchical, "samples_proposal") > 0.0);
    assert!(field(hierarchical, "evaluated_per_ray") < field(uniform, "evaluated_per_ray") * 2.0);
    // importance: both skip empty cells: fewer evaluations than either
    let evaluated = field(importance, "evaluated_per_ray");
    assert!(evaluated < 0.5 * field(hierarchical, "evaluated_per_ray"), "{importance}");
    assert!(field(importance, "samples_proposal") < field(hierarchical, "samples_proposal"));
    assert!(field(importance, "psnr_train") > field(uniform, "psnr_train"));
}
