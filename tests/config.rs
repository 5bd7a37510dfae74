//! The bundled settings files and the validation of settings.

use infnerf::config::{Config, LIVE_SETTINGS};
use std::path::Path;

fn asset(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs").join(name)
}

#[test]
fn default_toml_is_the_built_in_default() {
    assert_eq!(Config::load(&asset("default.toml")).unwrap(), Config::default());
}

#[test]
fn default_toml_names_every_setting() {
    // default.toml documents the settings: every one is written out, none only defaulted
    let text = std::fs::read_to_string(asset("default.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let built_in: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
    for (section, fields) in &built_in {
        let fields = fields.as_table().unwrap();
        for key in fields.keys() {
            let written = file.get(section).and_then(|s| s.get(key)).is_some();
            assert!(written, "default.toml lacks {section}.{key}");
        }
    }
    // with a comment saying what it does
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.starts_with('#') && l.contains(" = ")) {
        assert!(lines[i - 1].starts_with('#'), "default.toml: `{line}` has no comment above it");
    }
}

#[test]
fn tiny_toml_loads_and_round_trips() {
    let tiny = Config::load(&asset("tiny.toml")).unwrap();
    assert_eq!(tiny.field.hidden_width, 16);
    assert_eq!(Config::from_toml(&tiny.to_toml(), "round trip").unwrap(), tiny);
}

#[test]
fn gpu_toml_loads() {
    use infnerf::config::Precision;
    let gpu = Config::load(&asset("gpu.toml")).unwrap();
    assert_eq!((gpu.field.hash_levels, gpu.field.log2_table_size, gpu.field.max_depth), (16, 18, 2));
    // mixed precision with stored activations: the fastest combination measured on an H200
    assert_eq!((gpu.train.precision, gpu.train.recompute_backward), (Precision::Mixed, false));
    assert_eq!(Config::from_toml(&gpu.to_toml(), "round trip").unwrap(), gpu);
}

/// The every-term config turns on every term that needs nothing but the data, and keeps the
/// default's 2048 rays a step.
#[test]
fn every_term_toml_turns_every_term_on() {
    use infnerf::gpu::records::LOSS_NAMES;
    let config = Config::load(&asset("every_term.toml")).unwrap();
    for name in LOSS_NAMES {
        let off = matches!(name, "lpips" | "adversarial" | "discriminator");
        assert_eq!(config.lambda(name) > 0.0, !off, "{name}: {}", config.lambda(name));
    }
    assert!(config.loss.coarse_cuts >= 1 && config.loss.probes > 0);
    let t = &config.train;
    let rays = t.patches_per_batch * t.patch_size * t.patch_size + t.structure_patches * t.structure_patch_size.pow(2);
    let default = Config::default().train;
    assert_eq!(rays, default.patches_per_batch * default.patch_size * default.patch_size);
}

#[test]
fn invalid_settings_name_file_and_field() {
    for (text, field) in [
        ("[field]\nhash_levels = 0\n", "field.hash_levels"),
        ("[field]\nfinest_resolution = 2\n", "field.finest_resolution"),
        ("[train]\nsamples_per_ray = 1\n", "train.samples_per_ray"),
        ("[train]\nadam_beta2 = 1.5\n", "train.adam_beta2"),
        ("[data]\nbackground = [2.0, 0.0, 0.0]\n", "data.background"),
        ("[data]\ndownscale = 65\n", "data.downscale"),
        ("[data]\ndownscale = -2\n", "data.downscale"),
        ("[train]\npatch_size = -8\n", "train.patch_size"),
        ("[field]\nhidden_width = \"wide\"\n", "field.hidden_width"),
        ("[field]\nmax_depth = 3\n[train]\noccupancy_resolution = 20\n", "train.occupancy_resolution"),
        ("[train]\nstructure_patch_size = 7\n", "train.structure_patch_size"),
        ("[train]\nstructure_patches = 100000\n", "train.structure_patches"),
        ("[train]\naccumulate_steps = 0\n", "train.accumulate_steps"),
        ("[train]\naccumulate_steps = 64\npatches_per_batch = 131072\npatch_size = 1\n", "train.accumulate_steps"),
        ("[train]\nmemory_budget_mb = -1\n", "train.memory_budget_mb"),
        ("[train]\nproposal_samples = 1\n", "train.proposal_samples"),
        ("[train]\nprecision = \"f8\"\n", "train.precision"),
        ("[train]\nloss_scale_init = 0.5\n", "train.loss_scale_init"),
        ("[train]\nloss_scale_init = nan\n", "train.loss_scale_init"),
        ("[train]\nloss_scale_growth_steps = 0\n", "train.loss_scale_growth_steps"),
        ("[train]\nresample_samples = 5000\n", "train.resample_samples"),
        ("[train]\nproposal_floor = 1.5\n", "train.proposal_floor"),
        ("[train]\nhierarchical_from = -3\n", "train.hierarchical_from"),
        ("[loss]\nssim_window = 1\n", "loss.ssim_window"),
        ("[loss]\nhuber_delta = 0\n", "loss.huber_delta"),
        ("[loss]\nlambda_depth_consistency = -1\n", "loss.lambda_depth_consistency"),
        // 2x2 patches and no structure patches: no square holds a 4x4 window
        ("[loss]\nlambda_ssim = 0.1\n", "train.structure_patches"),
    ] {
        let error = Config::from_toml(text, "my.toml").unwrap_err().to_string();
        assert!(error.starts_with("my.toml: ") && error.contains(field), "{error}");
    }
}

#[test]
fn downscale_from_the_command_line_is_checked() {
    let error = Config::default().with_downscale(Some(65)).unwrap_err().to_string();
    assert!(error.contains("--downscale") && error.contains("data.downscale") && error.contains("64"), "{error}");
    assert_eq!(Config::default().with_downscale(None).unwrap(), Config::default());
    assert_eq!(Config::default().with_downscale(Some(4)).unwrap().data.downscale, 4);
}

#[test]
fn loss_and_paging_settings_validate() {
    let loaded = Config::from_toml(
        "[loss]\nlambda_mse = 0.5\nlevel_gamma = -1.5\ncoarse_cuts = 3\n[train]\nmax_buffer_mb = 16\n",
        "ok.toml",
    )
    .unwrap();
    assert_eq!((loaded.loss.lambda_mse, loaded.loss.level_gamma, loaded.loss.coarse_cuts), (0.5, -1.5, 3));
    assert_eq!(loaded.train.max_buffer_mb, 16);
    for (text, field) in [
        ("[loss]\nlambda_mse = -1.0\n", "loss.lambda_mse"),
        ("[loss]\nlambda_mse = nan\n", "loss.lambda_mse"),
        ("[loss]\nlevel_gamma = 17.0\n", "loss.level_gamma"),
        ("[loss]\nlevel_gamma = inf\n", "loss.level_gamma"),
        ("[loss]\ncoarse_cuts = 4\n", "loss.coarse_cuts"),
        ("[loss]\ncoarse_cuts = -1\n", "loss.coarse_cuts"),
        ("[loss]\ncoarse_every = 0\n", "loss.coarse_every"),
        ("[loss]\nlambda_rgb = 1.0\n", "lambda_rgb"),
        ("[train]\nmax_buffer_mb = -1\n", "train.max_buffer_mb"),
    ] {
        let error = Config::from_toml(text, "my.toml").unwrap_err().to_string();
        assert!(error.starts_with("my.toml: ") && error.contains(field), "{text}: {error}");
    }
}

#[test]
fn every_live_setting_can_be_set_and_read_back() {
    // patches large enough for SSIM's window, structure patches the discriminator can see
    let base = || {
        let mut config = Config::default();
        config.train.patch_size = 8;
        config.train.structure_patches = 1;
        config.train.structure_patch_size = 16;
        config
    };
    for key in LIVE_SETTINGS {
        let mut config = base();
        let before = config.live(key).unwrap_or_else(|| panic!("{key} has no value"));
        // a valid value different from the default (whole numbers for the step counts)
        let value = match key {
            "train.lr_decay_start" | "train.lr_decay_steps" | "train.log_every" | "loss.coarse_every" => before * 2.0,
            "train.lr_plateau_patience" | "train.lr_restart_period" => before * 2.0 + 100.0,
            k if k.starts_with("schedule.") && k.ends_with("_steps") || k == "schedule.balancer_window" => before * 2.0,
            "schedule.balancer" => 1.0 - before,
            // the overrides are "auto" (NaN) by default
            k if k.starts_with("schedule.override_") => 0.5,
            // terms off by default
            _ if before == 0.0 => 0.25,
            _ => before * 0.5,
        };
        assert_ne!(value, before, "{key}");
        config.set_live(key, value).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        assert_eq!(config.live(key), Some(f64::from(value as f32)), "{key}");
        // nothing else changed
        let mut expected = base();
        expected.set_live(key, value).unwrap();
        assert_eq!(config, expected);
        assert_ne!(config, Config::default(), "{key} changed nothing");
    }
}

#[test]
fn live_settings_refuse_other_keys_and_bad_values() {
    let refused = [
        ("field.hidden_width", 64.0),
        ("train.steps", 10.0),
        ("loss.coarse_cuts", 1.0),
        ("loss.coarse_every", 0.0),
        ("loss.coarse_every", 1.5),
        ("lambda_mse", 1.0),
        ("", 1.0),
        ("loss.lambda_mse", -1.0),
        ("loss.lambda_mse", f64::NAN),
        ("loss.level_gamma", 100.0),
        ("train.lr_hash", 0.0),
        ("train.lr_mlp", f64::INFINITY),
        ("train.lr_final_ratio", 1.5),
        ("train.log_every", 0.0),
        ("train.log_every", 2.5),
        ("train.lr_decay_steps", -3.0),
        ("train.lr_decay_start", 1e12),
        ("train.occupancy_explore", 2.0),
        ("data.coarse_fraction", -0.1),
    ];
    for (key, value) in refused {
        let mut config = Config::tiny();
        let error = config.set_live(key, value).unwrap_err().to_string();
        assert!(error.contains(key), "{key} = {value}: the error names the key: {error}");
        assert_eq!(config, Config::tiny(), "{key} = {value}: a refused setting changes nothing");
    }
    // SSIM cannot be turned on where no square of the batch holds its window (the default 2x2 patches)
    let mut config = Config::default();
    let error = config.set_live("loss.lambda_ssim", 0.1).unwrap_err().to_string();
    assert!(error.contains("loss.lambda_ssim") && error.contains("structure_patches"), "{error}");
    assert_eq!(config, Config::default());
    // an unknown key's error lists the keys that can change
    let error = Config::tiny().set_live("field.hidden_width", 64.0).unwrap_err().to_string();
    assert!(error.contains("loss.lambda_mse") && error.contains("train.lr_hash"), "{error}");
}

/// The learning-rate schedule pinned at given steps (SPEC §4): exponential decay without compounding,
/// cosine warm restarts, plateau reductions and restore cuts, the 0.01 floor.
#[test]
fn the_learning_rate_schedule_is_pinned() {
    use infnerf::config::LrState;
    let mut t = Config::default().train;
    let none = LrState::default();
    let close = |a: f32, b: f32| assert!((a - b).abs() <= 1e-5 * b.max(1e-3), "{a} vs {b}");
    close(t.lr_factor(0, &none), 1.0);
    close(t.lr_factor(500, &none), 1.0);
    close(t.lr_factor(10_500, &none), 0.03f32.sqrt());
    close(t.lr_factor(20_500, &none), 0.03);
    close(t.lr_factor(90_000, &none), 0.03);

    t.lr_decay_start = u32::MAX;
    t.lr_restart_period = 1000;
    close(t.lr_factor(0, &none), 1.0);
    close(t.lr_factor(500, &none), 0.55);
    close(t.lr_factor(999, &none), 0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * 0.999).cos()));
    close(t.lr_factor(1000, &none), 1.0);
    close(t.lr_factor(2250, &none), 0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * 0.25).cos()));

    t.lr_restart_period = 0;
    t.lr_plateau_patience = 100;
    let mut state = LrState::default();
    for (step, loss, reductions) in
        [(25, 1.0, 0), (50, 0.9, 0), (125, 0.95, 0), (150, 0.95, 1), (175, 0.95, 1), (250, 0.9, 2), (275, 0.5, 2)]
    {
        t.lr_plateau_update(&mut state, step, loss);
        assert_eq!(state.plateau_reductions, reductions, "step {step}");
    }
    t.lr_plateau_update(&mut state, 300, f64::NAN);
    assert_eq!((state.best, state.best_step), (Some(0.5), 275), "a non-finite loss is ignored");
    close(t.lr_factor(0, &state), 0.25);
    state.restore_factor = 0.5;
    close(t.lr_factor(0, &state), 0.125);
    state.plateau_reductions = 20;
    close(t.lr_factor(0, &state), 0.01);
}
