//! The bundled settings files and the validation of settings.

use infnerf::config::Config;
use std::path::Path;

fn asset(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs").join(name)
}

#[test]
fn default_toml_is_the_built_in_default() {
    assert_eq!(Config::load(&asset("default.toml")).unwrap(), Config::default());
}

#[test]
fn tiny_toml_loads_and_round_trips() {
    let tiny = Config::load(&asset("tiny.toml")).unwrap();
    assert_eq!(tiny.field.hidden_width, 16);
    assert_eq!(Config::from_toml(&tiny.to_toml(), "round trip").unwrap(), tiny);
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
    ] {
        let error = Config::from_toml(text, "my.toml").unwrap_err().to_string();
        assert!(error.starts_with("my.toml: ") && error.contains(field), "{error}");
    }
}

#[test]
fn downscale_from_the_command_line_is_checked() {
    // Only a refused value: a valid one would be set for the whole test process.
    let error = infnerf::config::set_cli_downscale(65).unwrap_err().to_string();
    assert!(error.contains("--downscale") && error.contains("data.downscale") && error.contains("64"), "{error}");
    assert_eq!(infnerf::config::cli_downscale(), None);
    assert_eq!(Config::default().with_cli_overrides(), Config::default());
}
