//! `plumb check --device cuda`: the ops on the default variants, then every other variant of
//! every registered family (plumb_cuda::FAMILIES) on its family's check ops; what passes is
//! recorded for this GPU (plumb_cuda::CheckedVariants).

use anyhow::{Context, Result};
use plumb_cuda::{CheckedVariants, CudaBackend, Family};
use plumb_ops::check::{CaseResult, CheckOptions, Status};

/// Runs the check and returns every case.
pub fn main(
    ordinal: usize,
    explicit: &[(String, String)],
    opts: &CheckOptions,
    json: bool,
) -> Result<Vec<CaseResult>> {
    // Explicit variants are what is being checked: no record is needed to select them.
    let b = crate::common::cuda_backend_unchecked(ordinal, explicit)?;
    let dir = plumb_cuda::checked::checked_dir()
        .context("no home directory for the record of checked variants (set PLUMB_HOME)")?;
    let mut record = CheckedVariants::load(&dir, &b.info().name);
    let mut all = Vec::new();
    let mut summary = Vec::new();
    if explicit.is_empty() {
        // The defaults, then each other variant on top of them.
        let cases = super::check::run(&b, opts, json);
        for f in plumb_cuda::FAMILIES {
            if let Some(v) = b.variant(f.name) {
                note(&mut record, &mut summary, f, v, &cases, opts);
            }
        }
        all.extend(cases);
        for f in plumb_cuda::FAMILIES {
            all.extend(check_family(&b, f, opts, json, &mut record, &mut summary)?);
        }
    } else {
        let cases = super::check::run(&b, opts, json);
        for (fam, v) in explicit {
            if let Some(f) = plumb_cuda::registry::family(fam) {
                note(&mut record, &mut summary, f, v, &cases, opts);
            }
        }
        all.extend(cases);
    }
    let path = record.save(&dir).with_context(|| {
        format!(
            "writing the record of checked variants in {}",
            dir.display()
        )
    })?;
    eprintln!("plumb: variants on {}:", b.info().name);
    for line in &summary {
        eprintln!("  {line}");
    }
    eprintln!("plumb: recorded in {}", path.display());
    Ok(all)
}

/// The non-default variants of `f`, each selected in turn and run on the family's check ops.
fn check_family(
    b: &CudaBackend,
    f: &Family,
    opts: &CheckOptions,
    json: bool,
    record: &mut CheckedVariants,
    summary: &mut Vec<String>,
) -> Result<Vec<CaseResult>> {
    let mut all = Vec::new();
    let default = b.variant(f.name);
    for v in f.variant_names().filter(|v| Some(*v) != default) {
        if let Err(e) = b.set_variant(f.name, v) {
            // e.g. cuBLAS missing: the variant cannot run here, so it is not recorded.
            summary.push(format!("{}={v}: not run ({e})", f.name));
            continue;
        }
        eprintln!("plumb: cuda with {}={v}", f.name);
        let mut cases = Vec::new();
        for op in family_ops(f, opts) {
            let only = CheckOptions {
                op: Some(op.to_string()),
                ..opts.clone()
            };
            cases.extend(super::check::run(b, &only, json));
        }
        note(record, summary, f, v, &cases, opts);
        all.extend(cases);
    }
    if let Some(d) = default {
        b.set_variant(f.name, d)?;
    }
    Ok(all)
}

/// The family's check ops that the `--op` filter keeps.
fn family_ops<'a>(f: &'a Family, opts: &'a CheckOptions) -> impl Iterator<Item = &'a str> {
    f.checks
        .iter()
        .copied()
        .filter(move |op| opts.op.as_deref().is_none_or(|o| op.contains(o)))
}

/// Records `f=v` as checked when every case of the family's check ops ran and passed. A run
/// whose `--op` filter leaves out a check op of the family, or a `--quick` one, proves less
/// than that and records nothing (a failure is still recorded).
fn note(
    record: &mut CheckedVariants,
    summary: &mut Vec<String>,
    f: &Family,
    v: &str,
    cases: &[CaseResult],
    opts: &CheckOptions,
) {
    let complete = family_ops(f, opts).count() == f.checks.len();
    let mine: Vec<&CaseResult> = cases.iter().filter(|c| f.checks.contains(&c.op)).collect();
    let fail = mine.iter().filter(|c| c.status == Status::Fail).count();
    let pass = mine.iter().filter(|c| c.status == Status::Pass).count();
    let line = format!("{}={v}: {pass} passed, {fail} failed", f.name);
    if fail > 0 {
        record.record(f.name, v, false);
        summary.push(format!("{line} — not recorded as checked"));
    } else if complete && !opts.quick && pass > 0 {
        record.record(f.name, v, true);
        summary.push(format!("{line} — checked"));
    } else if opts.quick {
        summary.push(format!("{line} — not recorded (a --quick run)"));
    } else {
        summary.push(format!(
            "{line} — not recorded (the --op filter leaves out {})",
            f.checks.join(", ")
        ));
    }
}
