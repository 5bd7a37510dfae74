//! The run's curves for the plots, built from metrics.jsonl lines: the same lines the trainer's
//! statistics become, so a resumed run's earlier curve (read from its file) and the live one join.

use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One plotted quantity: (step, value) points in step order.
pub type Series = Vec<[f64; 2]>;

#[derive(Clone, Debug, Default)]
pub struct History {
    /// By name: `psnr_train`, `loss_total`, `loss/<term>/cut<k>`, `weight/<term>`,
    /// `schedule/<group>`, `balancer/<term>`, `level_weight/cut<k>`, `lr_hash`, `psnr_test`, ...
    pub series: BTreeMap<String, Series>,
    /// Settings changed while training: (step, "key = value").
    pub events: Vec<(u32, String)>,
    /// Steps whose kernels replaced non-finite values, or whose loss was not finite.
    pub anomalies: Vec<u32>,
    pub last_step: u32,
}

/// Top-level numbers of a metrics line that get a curve of their own.
const SCALARS: [&str; 17] = [
    "loss_total",
    "loss_mse",
    "psnr_train",
    "rays_per_s",
    "lr",
    "lr_hash",
    "lr_mlp",
    "samples_active",
    "samples_proposal",
    "evaluated_per_ray",
    "chunk_rays",
    "grad_norm",
    "grad_norm_mean",
    "skipped_steps",
    "clipped_steps",
    "loss_scale",
    "overflow_steps",
];

impl History {
    /// The curves of an existing metrics.jsonl (a resumed run's); lines that are not JSON objects
    /// are reported with their line number.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let mut history = Self::default();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: line {} is not JSON", path.display(), i + 1))?;
            history.add_line(&value);
        }
        Ok(history)
    }

    /// Adds one metrics line (a step's statistics or a settings event).
    pub fn add_line(&mut self, line: &Value) {
        let Some(step) = line.get("step").and_then(Value::as_u64) else { return };
        let step = step as u32;
        match line.get("event").and_then(Value::as_str) {
            Some("set") => {
                let key = line.get("key").and_then(Value::as_str).unwrap_or("?");
                let value = line.get("value").map_or_else(|| "?".into(), Value::to_string);
                self.events.push((step, format!("{key} = {value}")));
                return;
            }
            Some("restore") => {
                let from = line.get("from_step").and_then(Value::as_u64).unwrap_or(0);
                self.events.push((step, format!("restored step {from}")));
                return;
            }
            Some("plateau") => {
                self.events.push((step, "plateau: learning rate cut".to_string()));
                return;
            }
            Some(_) => return,
            None => {}
        }
        self.last_step = self.last_step.max(step);
        let x = f64::from(step);
        for key in SCALARS {
            if let Some(v) = line.get(key).and_then(Value::as_f64) {
                self.push(key.to_string(), x, v);
            }
        }
        for (key, name) in [("gpu_bytes", "gpu_mib"), ("peak_gpu_bytes", "peak_gpu_mib")] {
            if let Some(v) = line.get(key).and_then(Value::as_f64) {
                self.push(name.to_string(), x, v / f64::from(1u32 << 20));
            }
        }
        if let Some(terms) = line.get("loss").and_then(Value::as_object) {
            for (term, cuts) in terms {
                for (k, v) in cuts.as_array().into_iter().flatten().enumerate() {
                    if let Some(v) = v.as_f64() {
                        self.push(format!("loss/{term}/cut{k}"), x, v);
                    }
                }
            }
        }
        for (field, prefix) in
            [("loss_weights", "weight"), ("schedule_weights", "schedule"), ("balancer_weights", "balancer")]
        {
            for (name, v) in line.get(field).and_then(Value::as_object).into_iter().flatten() {
                if let Some(v) = v.as_f64() {
                    self.push(format!("{prefix}/{name}"), x, v);
                }
            }
        }
        for (k, v) in line.get("level_weights").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(v) = v.as_f64() {
                self.push(format!("level_weight/cut{k}"), x, v);
            }
        }
        for (tensor, stats) in line.get("grad").and_then(Value::as_object).into_iter().flatten() {
            if let Some(v) = stats.get("max").and_then(Value::as_f64) {
                self.push(format!("grad_max/{tensor}"), x, v);
            }
            if let Some(v) = stats.get("norm").and_then(Value::as_f64) {
                self.push(format!("grad_norm/{tensor}"), x, v);
            }
        }
        let sanitized = line.get("sanitized").and_then(Value::as_u64).unwrap_or(0);
        let finite = line.get("loss_total").and_then(Value::as_f64).is_some_and(f64::is_finite);
        let anomalies: u64 = line
            .get("anomalies")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(_, n)| n.as_u64())
            .sum();
        if sanitized > 0 || !finite || anomalies > 0 {
            self.anomalies.push(step);
        }
    }

    /// A test-split evaluation's PSNR at `step`.
    pub fn add_test_psnr(&mut self, step: u32, psnr: f64) {
        self.push("psnr_test".into(), f64::from(step), psnr);
    }

    fn push(&mut self, name: String, x: f64, y: f64) {
        let series = self.series.entry(name).or_default();
        // a resumed run may repeat the steps after its checkpoint: the newer points replace them
        while series.last().is_some_and(|p| p[0] >= x) {
            series.pop();
        }
        series.push([x, y]);
    }

    pub fn get(&self, name: &str) -> Option<&Series> {
        self.series.get(name)
    }

    /// The names that start with `prefix`, in order.
    pub fn names_with(&self, prefix: &str) -> Vec<&str> {
        self.series.keys().filter(|k| k.starts_with(prefix)).map(String::as_str).collect()
    }

    pub fn latest(&self, name: &str) -> Option<f64> {
        self.series.get(name).and_then(|s| s.last()).map(|p| p[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_lines_become_curves_events_and_anomalies() {
        let mut history = History::default();
        history.add_line(&json!({
            "step": 10, "loss_total": 0.5, "psnr_train": 12.0, "sanitized": 0,
            "loss": {"mse": [0.1, 0.2], "tv": [0.0]},
            "loss_weights": {"mse": 1.0}, "schedule_weights": {"rgb": 1.0}, "balancer_weights": {"mse": 0.9},
            "level_weights": [0.75, 0.25]
        }));
        history.add_line(&json!({"event": "set", "step": 12, "key": "loss.lambda_tv", "value": 0.01}));
        history.add_line(&json!({"step": 20, "loss_total": 0.4, "sanitized": 3}));
        assert_eq!(history.get("loss_total"), Some(&vec![[10.0, 0.5], [20.0, 0.4]]));
        assert_eq!(history.get("loss/mse/cut1"), Some(&vec![[10.0, 0.2]]));
        assert_eq!(history.latest("balancer/mse"), Some(0.9));
        assert_eq!(history.latest("level_weight/cut1"), Some(0.25));
        assert_eq!(history.events, vec![(12, "loss.lambda_tv = 0.01".to_string())]);
        assert_eq!(history.anomalies, vec![20]);
        assert_eq!(history.last_step, 20);
        assert_eq!(history.names_with("loss/"), vec!["loss/mse/cut0", "loss/mse/cut1", "loss/tv/cut0"]);
    }

    #[test]
    fn a_resumed_run_replaces_the_steps_it_repeats() {
        let mut history = History::default();
        for (step, v) in [(10, 1.0), (20, 2.0), (30, 3.0), (20, 2.5), (30, 3.5)] {
            history.add_line(&json!({"step": step, "loss_total": v}));
        }
        assert_eq!(history.get("loss_total"), Some(&vec![[10.0, 1.0], [20.0, 2.5], [30.0, 3.5]]));
    }
}
