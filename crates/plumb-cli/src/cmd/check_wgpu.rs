//! `plumb check --device wgpu`: the ops once per combination of the wgpu variants
//! (plumb_wgpu::variant) that the adapter runs, or only on the explicit `--variant`s.

use anyhow::{Context, Result};
use plumb_ops::check::{CaseResult, CheckOptions};

/// Runs the check and returns every case.
pub fn main(
    ordinal: usize,
    explicit: &[(String, String)],
    opts: &CheckOptions,
    json: bool,
) -> Result<Vec<CaseResult>> {
    if !explicit.is_empty() {
        let b = crate::common::wgpu_backend(ordinal, explicit, false)?;
        return Ok(super::check::run(&b, opts, json));
    }
    let mut all = Vec::new();
    let mut seen = Vec::new();
    for v in plumb_wgpu::Variants::all() {
        let b = plumb_wgpu::WgpuBackend::with_options(plumb_wgpu::Options {
            ordinal,
            variants: v,
            ..Default::default()
        })
        .context("opening the wgpu adapter")?;
        // A variant the adapter cannot run falls back to one already checked.
        if seen.contains(&b.variants()) {
            eprintln!("plumb: {} cannot run {}", b.describe(), v.describe());
            continue;
        }
        seen.push(b.variants());
        eprintln!("plumb: {} ({})", b.describe(), v.describe());
        all.extend(super::check::run(&b, opts, json));
    }
    Ok(all)
}
