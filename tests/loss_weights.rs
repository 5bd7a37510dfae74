//! The loss-weight schedule, the dynamic balancer and their settings, pinned at chosen steps and
//! histories (SPEC §3.6, §3.7 and its corrections of the seed).

mod common;

use infnerf::config::{Config, ScheduleConfig, BALANCER_OVERRIDE_KEY, LIVE_SETTINGS};
use infnerf::gpu::records::LOSS_NAMES;
use infnerf::loss_weights::{
    balancer_multiplier, balancer_weight, effective_weight, schedule_breakpoints, schedule_curve, schedule_weights,
    term_group, term_weight, Balancer, Group, GroupWeights, CONSISTENCY_FLOOR, TERM_GROUPS,
};

/// Warm-up 400, regularization from 1000 (full at 2000), consistency peak at 2000 (floor from 3800).
fn settings() -> ScheduleConfig {
    ScheduleConfig {
        geometric_warmup_steps: 400,
        regularization_start_steps: 1000,
        consistency_peak_steps: 2000,
        ..ScheduleConfig::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

fn group_at(step: u32, group: Group) -> f64 {
    schedule_weights(step, &settings()).get(group)
}

#[test]
fn rgb_is_constant() {
    for step in [0, 1, 399, 400, 1000, 2000, 3800, 1_000_000, u32::MAX] {
        assert_eq!(group_at(step, Group::Rgb), 1.0, "step {step}");
    }
}

#[test]
fn geometric_ramps_over_the_warm_up() {
    for (step, expected) in [(0, 0.0), (100, 0.25), (200, 0.5), (399, 0.9975), (400, 1.0), (401, 1.0), (u32::MAX, 1.0)]
    {
        let got = group_at(step, Group::Geometric);
        assert!(close(got, expected), "step {step}: {got} != {expected}");
    }
}

#[test]
fn regularization_waits_then_ramps_over_as_many_steps() {
    for (step, expected) in [
        (0, 0.0),
        (500, 0.0),
        (999, 0.0),
        (1000, 0.0), // the start: the ramp begins at 0
        (1250, 0.25),
        (1500, 0.5), // start + half
        (2000, 1.0), // 2 x start
        (2001, 1.0),
        (1_000_000, 1.0),
        (u32::MAX, 1.0),
    ] {
        let got = group_at(step, Group::Regularization);
        assert!(close(got, expected), "step {step}: {got} != {expected}");
    }
}

#[test]
fn consistency_rises_to_its_peak_then_decays_to_the_floor() {
    for (step, expected) in [
        (0, 0.0),
        (500, 0.25),
        (1000, 0.5),
        (2000, 1.0), // the peak
        (2500, 0.75),
        (3000, 0.5), // peak + half
        (3600, 0.2),
        (3800, 0.1), // 1.9 x peak: the floor reached
        (3900, 0.1),
        (4000, 0.1), // 2 x peak: the seed's max(0.1, ..), not 0
        (100_000, 0.1),
        (u32::MAX, 0.1), // far beyond
    ] {
        let got = group_at(step, Group::Consistency);
        assert!(close(got, expected), "step {step}: {got} != {expected}");
    }
    assert_eq!(group_at(u32::MAX, Group::Consistency), CONSISTENCY_FLOOR);
}

#[test]
fn the_schedule_is_a_function_of_the_step_alone() {
    // nothing compounds: any order of calls, any repetition, gives each step the same multipliers
    let s = settings();
    let forward: Vec<GroupWeights> = (0..5000).map(|step| schedule_weights(step, &s)).collect();
    let backward: Vec<GroupWeights> = (0..5000).rev().map(|step| schedule_weights(step, &s)).collect();
    assert!(forward.iter().eq(backward.iter().rev()));
    // the decay after the peak is linear in the step (a per-step factor would make it geometric)
    for step in [2100u32, 2700, 3300, 3700] {
        let expected = 1.0 - f64::from(step - 2000) / 2000.0;
        assert!(close(forward[step as usize].consistency, expected), "step {step}");
    }
    // every multiplier stays in [0, 1]
    for w in &forward {
        for group in Group::ALL {
            assert!((0.0..=1.0).contains(&w.get(group)), "{w:?}");
        }
    }
}

#[test]
fn zero_length_warm_ups_give_full_weight_from_the_start() {
    let s = ScheduleConfig { geometric_warmup_steps: 0, regularization_start_steps: 0, ..settings() };
    for step in [0, 1, 10_000] {
        let w = schedule_weights(step, &s);
        assert_eq!((w.geometric, w.regularization), (1.0, 1.0), "step {step}");
    }
}

#[test]
fn default_schedule() {
    let s = ScheduleConfig::default();
    assert_eq!((s.geometric_warmup_steps, s.regularization_start_steps, s.consistency_peak_steps), (500, 1000, 2000));
    assert!(!s.balancer);
    assert_eq!(s.balancer_window, 10);
    assert_eq!(
        schedule_weights(250, &s),
        GroupWeights { rgb: 1.0, geometric: 0.5, regularization: 0.0, consistency: 0.125 }
    );
}

#[test]
fn group_overrides_replace_the_schedule() {
    let s = ScheduleConfig { override_consistency: Some(0.3), override_rgb: Some(0.0), ..settings() };
    for step in [0, 1000, 2000, 3000, 100_000] {
        let w = schedule_weights(step, &s);
        let bare = schedule_weights(step, &settings());
        assert_eq!(w.consistency, f64::from(0.3f32), "step {step}");
        assert_eq!(w.rgb, 0.0);
        assert_eq!((w.geometric, w.regularization), (bare.geometric, bare.regularization), "step {step}");
        assert_eq!(schedule_weights(step, &s.without_overrides()), bare);
    }
    let none = ScheduleConfig { override_geometric: Some(1.0), ..settings() };
    assert_eq!(schedule_weights(0, &none).geometric, 1.0);
}

#[test]
fn the_curve_matches_pointwise_calls_and_holds_every_breakpoint() {
    let s = settings();
    let curve = schedule_curve(0..5001, 11, &s);
    for &(step, w) in &curve {
        assert_eq!(w, schedule_weights(step, &s), "step {step}");
    }
    let steps: Vec<u32> = curve.iter().map(|&(step, _)| step).collect();
    assert!(steps.windows(2).all(|p| p[0] < p[1]), "ordered, no repeats: {steps:?}");
    // 11 evenly spaced steps from 0 to 5000, and the kinks 400, 1000, 2000, 3800
    let mut expected: Vec<u32> = (0..=10).map(|i| i * 500).collect();
    expected.extend([400, 3800]);
    expected.sort_unstable();
    assert_eq!(steps, expected);
    assert_eq!(schedule_breakpoints(&s), vec![400, 1000, 2000, 3800]);
    // a piecewise-linear plot through the curve's points is the schedule at every step
    for step in 0..=5000u32 {
        let i = steps.partition_point(|&p| p <= step) - 1;
        let (a, wa) = curve[i];
        let (b, wb) = curve.get(i + 1).copied().unwrap_or(curve[i]);
        let f = if b > a { f64::from(step - a) / f64::from(b - a) } else { 0.0 };
        let exact = schedule_weights(step, &s);
        for group in Group::ALL {
            let lerp = wa.get(group) + f * (wb.get(group) - wa.get(group));
            assert!((lerp - exact.get(group)).abs() < 1e-9, "step {step} {}", group.name());
        }
    }
    // a short range: every step once; a range inside one piece: its ends only
    assert_eq!(schedule_curve(10..14, 100, &s).iter().map(|p| p.0).collect::<Vec<_>>(), vec![10, 11, 12, 13]);
    assert_eq!(schedule_curve(500..900, 2, &s).iter().map(|p| p.0).collect::<Vec<_>>(), vec![500, 899]);
    assert_eq!(schedule_curve(7..8, 1, &s).iter().map(|p| p.0).collect::<Vec<_>>(), vec![7]);
    assert!(schedule_curve(5..5, 10, &s).is_empty());
    assert!(schedule_curve(0..100, 0, &s).is_empty());
    // the whole of u32 without overflow
    let far = schedule_curve(0..u32::MAX, 3, &s);
    assert_eq!(far.first().unwrap().0, 0);
    assert_eq!(far.last().unwrap().0, u32::MAX - 1);
}

#[test]
fn the_seed_terms_have_their_groups() {
    for (term, group) in [
        ("mse", Group::Rgb),
        ("ssim", Group::Rgb),
        ("lpips", Group::Rgb),
        ("adversarial", Group::Rgb),
        ("depth_consistency", Group::Geometric),
        ("normal_consistency", Group::Geometric),
        ("density_consistency", Group::Consistency),
        ("sparsity", Group::Regularization),
        ("tv", Group::Regularization),
        ("tv_depth", Group::Regularization),
        ("seam", Group::Regularization),
        ("param", Group::Regularization),
    ] {
        assert_eq!(term_group(term), group, "{term}");
    }
    // every group schedules some term
    for group in Group::ALL {
        assert!(TERM_GROUPS.iter().any(|&(_, g)| g == group), "{} has no term", group.name());
    }
}

#[test]
fn every_loss_term_the_kernels_compute_has_a_group() {
    for term in LOSS_NAMES {
        term_group(term);
    }
}

#[test]
#[should_panic(expected = "no loss term named smoothness_loss")]
fn an_unknown_term_is_a_bug() {
    term_group("smoothness_loss");
}

#[test]
fn balancer_weight_of_hand_computed_histories() {
    // constant: std 0, weight exactly 1
    assert_eq!(balancer_weight(&[0.25; 10], 10), 1.0);
    assert_eq!(balancer_weight(&[0.1; 10], 10), 1.0);
    // 1, 3, 1, 3, ...: mean 2, population std 1, CV 1/2 -> 2/3
    let alternating: Vec<f64> = (0..10).map(|i| if i % 2 == 0 { 1.0 } else { 3.0 }).collect();
    assert!(close(balancer_weight(&alternating, 10), 2.0 / 3.0));
    // 1..=10: mean 5.5, population variance (10^2 - 1) / 12 = 8.25 (numpy's np.std, ddof 0)
    let ramp: Vec<f64> = (1..=10).map(f64::from).collect();
    let expected = 1.0 / (1.0 + 8.25f64.sqrt() / 5.5);
    assert!(close(balancer_weight(&ramp, 10), expected));
    assert!(close(expected, 0.656_929_669_182_746_4), "{expected}");
    // fewer values than the window: 1
    assert_eq!(balancer_weight(&alternating[..9], 10), 1.0);
    assert_eq!(balancer_weight(&[], 10), 1.0);
    // only the last `window` values count: 9 huge values then 1, 3, 1, 3
    let mut long = vec![1e6; 9];
    long.extend([1.0, 3.0, 1.0, 3.0]);
    assert!(close(balancer_weight(&long, 4), 2.0 / 3.0));
    // where the CV means nothing: 1
    assert_eq!(balancer_weight(&[0.0; 10], 10), 1.0);
    assert_eq!(balancer_weight(&[-1.0, -3.0, -1.0, -3.0], 4), 1.0);
    assert_eq!(balancer_weight(&[-1.0, 1.0, -1.0, 1.0], 4), 1.0);
    assert_eq!(balancer_weight(&[1.0, f64::NAN, 1.0, 3.0], 4), 1.0);
    assert_eq!(balancer_weight(&[1.0, f64::INFINITY, 1.0, 3.0], 4), 1.0);
    assert_eq!(balancer_weight(&[1.0, 3.0], 0), 1.0);
    // a positive mean with some values below 0 still has a CV: mean 1, std 2 -> 1/3
    assert!(close(balancer_weight(&[-1.0, 3.0, -1.0, 3.0], 4), 1.0 / 3.0));
}

#[test]
fn the_balancer_waits_for_its_window_then_slides() {
    let mut balancer = Balancer::default();
    assert_eq!(balancer.window(), 10);
    assert_eq!(balancer.weight("mse"), 1.0, "a term never recorded");
    for i in 0..10 {
        assert_eq!(balancer.weight("mse"), 1.0, "{i} values");
        assert!(balancer.record("mse", if i % 2 == 0 { 1.0 } else { 3.0 }));
    }
    assert!(close(balancer.weight("mse"), 2.0 / 3.0));
    // five 2.0s slide in: window 3, 1, 3, 1, 3, 2, 2, 2, 2, 2 -> mean 2.1; squared deviations
    // 3 x 0.81 + 2 x 1.21 + 5 x 0.01 = 4.9, variance 0.49, std 0.7, CV 1/3 -> 3/4
    for _ in 0..5 {
        balancer.record("mse", 2.0);
    }
    assert_eq!(balancer.history("mse"), &[3.0, 1.0, 3.0, 1.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
    assert!(close(balancer.weight("mse"), 0.75), "{}", balancer.weight("mse"));
    for _ in 0..5 {
        balancer.record("mse", 2.0);
    }
    assert_eq!(balancer.weight("mse"), 1.0, "the window is constant now");
    // terms are independent
    assert_eq!(balancer.weight("ssim"), 1.0);
    assert_eq!(balancer.history("ssim"), &[] as &[f64]);
    // non-finite values are not recorded and do not count
    assert!(!balancer.record("ssim", f64::NAN));
    assert!(!balancer.record("ssim", f64::INFINITY));
    assert_eq!(balancer.history("ssim"), &[] as &[f64]);
    let weights = balancer.weights();
    assert_eq!(weights.keys().collect::<Vec<_>>(), vec!["mse"]);
}

#[test]
fn the_balancer_window_is_a_setting() {
    let mut balancer = Balancer::new(4);
    for v in [5.0, 1.0, 3.0, 1.0] {
        assert_eq!(balancer.weight("tv"), 1.0);
        balancer.record("tv", v);
    }
    // 5, 1, 3, 1: mean 2.5, deviations 2.5, -1.5, 0.5, -1.5, variance 11 / 4, CV sqrt(2.75) / 2.5
    assert!(close(balancer.weight("tv"), 1.0 / (1.0 + 2.75f64.sqrt() / 2.5)));
    balancer.record("tv", 3.0);
    assert!(close(balancer.weight("tv"), 2.0 / 3.0), "5 slid out");
    // shrinking keeps the newest; growing waits for the extra values
    balancer.set_window(2);
    assert_eq!(balancer.history("tv"), &[1.0, 3.0]);
    assert!(close(balancer.weight("tv"), 2.0 / 3.0));
    balancer.set_window(3);
    assert_eq!(balancer.weight("tv"), 1.0);
    balancer.record("tv", 1.0);
    assert_eq!(balancer.history("tv"), &[1.0, 3.0, 1.0]);
}

#[test]
fn the_balancer_round_trips_through_a_checkpoint() {
    let mut balancer = Balancer::new(10);
    for i in 0..14 {
        balancer.record("mse", 0.01 + f64::from(i) * 1e-3);
        balancer.record("tv", 1.0 / f64::from(i + 1));
    }
    let json = serde_json::to_string(&balancer).unwrap();
    let restored: Balancer = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, balancer);
    assert_eq!(restored.weights(), balancer.weights());
    assert!(balancer.weight("tv") < 1.0);
}

#[test]
fn weights_multiply_and_overrides_replace() {
    assert_eq!(effective_weight(0.5, 0.25, 0.8), 0.1);
    let mut balancer = Balancer::new(4);
    for v in [1.0, 3.0, 1.0, 3.0] {
        balancer.record("depth_consistency", v);
    }
    let mut s = settings();
    // balancer off: its factor is 1
    assert_eq!(balancer_multiplier("depth_consistency", &balancer, &s), 1.0);
    assert!(close(term_weight("depth_consistency", 0.1, 200, &s, &balancer), 0.1 * 0.5));
    // on: the weight of the recorded window
    s.balancer = true;
    assert!(close(balancer_multiplier("depth_consistency", &balancer, &s), 2.0 / 3.0));
    assert!(close(term_weight("depth_consistency", 0.1, 200, &s, &balancer), 0.1 * 0.5 * 2.0 / 3.0));
    // a balancer override replaces the weight, on or off
    s.balancer_override.insert("depth_consistency".into(), 0.25);
    assert_eq!(balancer_multiplier("depth_consistency", &balancer, &s), 0.25);
    s.balancer = false;
    assert_eq!(balancer_multiplier("depth_consistency", &balancer, &s), 0.25);
    // and a group override replaces the schedule: lambda x override x balancer override
    s.override_geometric = Some(0.5);
    assert!(close(term_weight("depth_consistency", 0.1, 0, &s, &balancer), 0.1 * 0.5 * 0.25));
    // other terms keep theirs
    assert_eq!(balancer_multiplier("normal_consistency", &balancer, &s), 1.0);
    assert!(close(term_weight("density_consistency", 1.0, 3000, &s, &balancer), 0.5));
    assert_eq!(term_weight("mse", 2.0, 0, &s, &balancer), 2.0);
}

#[test]
fn schedule_settings_load_from_toml() {
    let text = "[schedule]\ngeometric_warmup_steps = 0\nregularization_start_steps = 300\n\
                consistency_peak_steps = 700\nbalancer = true\nbalancer_window = 20\noverride_rgb = 1\n\
                override_geometric = 0.5\noverride_regularization = \"auto\"\n\
                balancer_override = { ssim = 1.0, tv = 0.5 }\n";
    let s = Config::from_toml(text, "s.toml").unwrap().schedule;
    assert_eq!((s.geometric_warmup_steps, s.regularization_start_steps, s.consistency_peak_steps), (0, 300, 700));
    assert!(s.balancer);
    assert_eq!(s.balancer_window, 20);
    assert_eq!(
        (s.override_rgb, s.override_geometric, s.override_regularization, s.override_consistency),
        (Some(1.0), Some(0.5), None, None)
    );
    assert_eq!(s.balancer_override.get("ssim"), Some(&1.0));
    assert_eq!(s.balancer_override.get("tv"), Some(&0.5));
    // and back, through TOML and through a checkpoint's JSON
    let config = Config { schedule: s, ..Config::default() };
    assert_eq!(Config::from_toml(&config.to_toml(), "round trip").unwrap(), config);
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), config);
}

#[test]
fn invalid_schedule_settings_name_the_field() {
    for (text, field) in [
        ("consistency_peak_steps = 0", "schedule.consistency_peak_steps"),
        ("consistency_peak_steps = -5", "schedule.consistency_peak_steps"),
        ("geometric_warmup_steps = 1.5", "schedule.geometric_warmup_steps"),
        ("balancer_window = 1", "schedule.balancer_window"),
        ("balancer_window = 10001", "schedule.balancer_window"),
        ("balancer = 1", "schedule.balancer"),
        ("override_rgb = 1.5", "schedule.override_rgb"),
        ("override_geometric = -0.1", "schedule.override_geometric"),
        ("override_regularization = nan", "schedule.override_regularization"),
        ("override_consistency = \"sometimes\"", "schedule.override_consistency"),
        ("balancer_override = { smoothness_loss = 0.5 }", "schedule.balancer_override"),
        ("balancer_override = { mse = 2.0 }", "schedule.balancer_override"),
        ("balancer_override = { mse = \"auto\" }", "schedule.balancer_override"),
        ("lambda_geometric = 1.0", "lambda_geometric"),
    ] {
        let error = Config::from_toml(&format!("[schedule]\n{text}\n"), "my.toml").unwrap_err().to_string();
        assert!(error.starts_with("my.toml: ") && error.contains(field), "{text}: {error}");
    }
    // an unknown term's error lists the terms
    let error = Config::from_toml("[schedule]\nbalancer_override = { nope = 0.5 }\n", "my.toml").unwrap_err();
    assert!(error.to_string().contains("\"nope\"") && error.to_string().contains("density_consistency"), "{error}");
}

#[test]
fn schedule_settings_change_while_training() {
    for key in [
        "schedule.geometric_warmup_steps",
        "schedule.regularization_start_steps",
        "schedule.consistency_peak_steps",
        "schedule.balancer",
        "schedule.balancer_window",
        "schedule.override_rgb",
        "schedule.override_geometric",
        "schedule.override_regularization",
        "schedule.override_consistency",
    ] {
        assert!(LIVE_SETTINGS.contains(&key), "{key}");
    }
    let mut config = Config::default();
    config.set_live("schedule.geometric_warmup_steps", 0.0).unwrap();
    config.set_live("schedule.regularization_start_steps", 50.0).unwrap();
    config.set_live("schedule.consistency_peak_steps", 3000.0).unwrap();
    config.set_live("schedule.balancer_window", 25.0).unwrap();
    config.set_live("schedule.balancer", 1.0).unwrap();
    let s = &config.schedule;
    assert_eq!(
        (s.geometric_warmup_steps, s.regularization_start_steps, s.consistency_peak_steps, s.balancer_window),
        (0, 50, 3000, 25)
    );
    assert!(s.balancer);
    assert_eq!(config.live("schedule.balancer"), Some(1.0));
    config.set_live("schedule.balancer", 0.0).unwrap();
    assert!(!config.schedule.balancer);

    // overrides: a number sets, NaN is "auto"
    assert!(config.live("schedule.override_consistency").unwrap().is_nan());
    config.set_live("schedule.override_consistency", 0.25).unwrap();
    assert_eq!(config.schedule.override_consistency, Some(0.25));
    assert_eq!(config.live("schedule.override_consistency"), Some(0.25));
    assert_eq!(schedule_weights(3000, &config.schedule).consistency, 0.25);
    config.set_live("schedule.override_consistency", f64::NAN).unwrap();
    assert_eq!(config.schedule.override_consistency, None);

    let key = format!("{BALANCER_OVERRIDE_KEY}ssim");
    assert!(config.live(&key).unwrap().is_nan());
    config.set_live(&key, 0.5).unwrap();
    assert_eq!(config.schedule.balancer_override.get("ssim"), Some(&0.5));
    assert_eq!(config.live(&key), Some(0.5));
    config.set_live(&key, f64::NAN).unwrap();
    assert!(config.schedule.balancer_override.is_empty());

    // refused values change nothing, and the error names the key
    for (key, value) in [
        ("schedule.consistency_peak_steps", 0.0),
        ("schedule.geometric_warmup_steps", -1.0),
        ("schedule.regularization_start_steps", 10.5),
        ("schedule.balancer_window", 1.0),
        ("schedule.balancer", 0.5),
        ("schedule.balancer", f64::NAN),
        ("schedule.override_rgb", 1.5),
        ("schedule.override_geometric", -0.5),
        ("schedule.override_regularization", f64::INFINITY),
        ("schedule.override_nothing", 0.5),
        ("schedule.balancer_override.ssim", 2.0),
        ("schedule.balancer_override.nope", 0.5),
        ("schedule.balancer_override", 0.5),
    ] {
        let before = config.clone();
        let error = config.set_live(key, value).unwrap_err().to_string();
        assert!(error.contains(key), "{key} = {value}: {error}");
        assert_eq!(config, before, "{key} = {value}");
        if key.ends_with("nope") || key.ends_with("nothing") {
            assert_eq!(config.live(key), None, "{key}");
        }
    }
    // the unknown-key error says the per-term overrides can change
    let error = config.set_live("schedule.nope", 1.0).unwrap_err().to_string();
    assert!(error.contains("schedule.balancer_override.<term>") && error.contains("schedule.override_rgb"), "{error}");
}

/// The consistency terms' partner of each rendered cut is the next finer rendered cut, whatever the
/// order the cuts were drawn in; the finest has none.
#[test]
fn each_cut_pairs_with_the_next_finer_rendered_cut() {
    use infnerf::gpu::records::NO_CUT;
    use infnerf::trainer::finer_cuts;
    assert_eq!(finer_cuts(&[3, 1, 0, 2]), [NO_CUT, 3, 1, 0]);
    assert_eq!(finer_cuts(&[3, 0]), [NO_CUT, 0, NO_CUT, NO_CUT]);
    assert_eq!(finer_cuts(&[2]), [NO_CUT; 4]);
}

/// `loss.coarse_every = 3` renders the coarser cut on steps 0, 3, 6, ... only, and the statistics
/// average each coarser cut's terms over the steps that rendered it: three steps of which the first
/// renders both cuts log the coarse cut's loss of that one step, as a run of that step alone does
/// (averaged over all three steps it would be a third of it).
#[test]
fn coarser_cuts_every_few_steps_are_averaged_over_their_steps() {
    use infnerf::trainer::Trainer;
    let dataset = common::random_dataset(6, 24, 11);
    let mut config = Config::tiny();
    config.field.max_depth = 1;
    config.loss.coarse_cuts = 1;
    config.loss.lambda_depth_consistency = 0.1;
    // at full weight from step 0 (a term that weighs 0 is not computed)
    config.schedule.geometric_warmup_steps = 0;
    let gpu = common::gpu();
    let mut every = config.clone();
    every.loss.coarse_every = 3;
    let mut trainer = Trainer::new(gpu.clone(), every, &dataset).unwrap();
    let mut rendered = Vec::new();
    for _ in 0..3 {
        let plan = trainer.plan_step();
        rendered.push(plan.cuts.len());
        trainer.run_step(&plan, None).unwrap();
    }
    assert_eq!(rendered, [2, 1, 1], "the coarser cut on step 0 only");
    let three = trainer.read_stats().unwrap();
    let mut alone = Trainer::new(gpu, config, &dataset).unwrap();
    alone.step().unwrap();
    let one = alone.read_stats().unwrap();
    assert_eq!((three.steps, one.steps), (3, 1));
    // the level weights logged are step 0's, the last step that rendered both cuts
    assert_eq!(three.level_weights, one.level_weights);
    assert_eq!(three.level_weights.len(), 2);
    for name in ["mse", "depth_consistency"] {
        let value = |s: &infnerf::trainer::LossStats| s.terms.iter().find(|t| t.0 == name).unwrap().1[1];
        let (a, b) = (value(&three), value(&one));
        assert!(b > 0.0 && (a - b).abs() <= 1e-4 * b, "{name} at the coarser cut: {a} after 3 steps, {b} after step 0");
    }
}
