//! `plumb check --model`: a whole model's logits on a backend against the reference
//! backend's, held to the thresholds of the backend's precision; exits non-zero beyond them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use plumb_engine::check::{compare_logits, LogitThresholds};
use plumb_ops::Backend;

use crate::common::DeviceArgs;

/// Thresholds given on the command line, each replacing the precision's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub max_abs: Option<f64>,
    pub mean_kl: Option<f64>,
    pub margin: Option<f32>,
}

impl Overrides {
    fn apply(self, mut t: LogitThresholds) -> LogitThresholds {
        t.max_abs = self.max_abs.unwrap_or(t.max_abs);
        t.mean_kl = self.mean_kl.unwrap_or(t.mean_kl);
        t.decisive_margin = self.margin.unwrap_or(t.decisive_margin);
        t
    }
}

pub fn main(
    device: &DeviceArgs,
    model: &Path,
    prompt: &str,
    overrides: Overrides,
    json: bool,
) -> Result<()> {
    // `--model` alone checks the default model.
    let explicit = (model.as_os_str() != "default").then_some(model);
    let path = crate::common::model_path(explicit)?;
    let choice = device.choice()?;
    let mut reference =
        plumb_engine::Session::load(&path, plumb_ops::ReferenceBackend::default(), 512)
            .with_context(|| format!("loading {}", path.display()))?;
    let ids = reference.encode(prompt)?;
    let want = reference.logits_all(&ids)?;
    // The matrices' format (the first layer's Wq), which the backend's precision depends on.
    let ty = reference
        .model
        .weights
        .layers
        .first()
        .map(|l| l.wq.ty)
        .context("the model has no layers")?;
    let (got, precision, name) = crate::common::with_backend!(&choice, |b| {
        let (p, n) = (b.precision(ty), b.name());
        let mut s = plumb_engine::Session::load(&path, b, 512)?;
        (s.logits_all(&ids)?, p, n)
    });
    let t = overrides.apply(LogitThresholds::for_precision(precision));
    let vocab = reference.model.config.vocab_size;
    let c = compare_logits(&got, &want, vocab, t.decisive_margin);
    let violations = c.violations(&t);
    if json {
        let v = serde_json::json!({
            "backend": name, "precision": format!("{precision:?}"), "weights": ty.name(),
            "positions": c.positions, "max_abs": c.max_abs, "mean_kl": c.mean_kl,
            "max_kl": c.max_kl, "top1_agree": c.top1_agree, "decisive": c.decisive,
            "decisive_agree": c.decisive_agree,
            "thresholds": {"max_abs": t.max_abs, "mean_kl": t.mean_kl, "margin": t.decisive_margin},
            "pass": violations.is_empty(),
        });
        println!("{v}");
    } else {
        println!(
            "model check ({name} vs reference, {} weights, {precision:?}, {} positions): max \
             |Δlogit| {:.4} (≤ {}), mean KL {:.2e} (≤ {:.0e}, max {:.2e}), top-1 agreement {}/{} \
             ({}/{} where the reference's top two are ≥ {} apart)",
            ty.name(),
            c.positions,
            c.max_abs,
            t.max_abs,
            c.mean_kl,
            t.mean_kl,
            c.max_kl,
            c.top1_agree,
            c.positions,
            c.decisive_agree,
            c.decisive,
            t.decisive_margin
        );
    }
    if !violations.is_empty() {
        bail!("model check failed: {}", violations.join("; "));
    }
    if !json {
        println!("PASS");
    }
    Ok(())
}
