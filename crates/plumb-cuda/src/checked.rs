//! The record of which variants passed `plumb check` on which GPU, with which kernels.
//!
//! `plumb check --device cuda` writes, per GPU name, the variants whose check cases all
//! passed, under a fingerprint of every kernel source and of this build. A variant asked for
//! explicitly (`--variant F=V`) is refused unless the record of this GPU lists it under the
//! current fingerprint: a kernel nobody has checked on this GPU cannot be benchmarked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::compile::KERNEL_FILES;
use crate::registry;

const HEADER: &str = "plumb checked variants v1";

/// A hash of every kernel file's source and of this build's version: a record made with
/// other kernels says nothing about these.
pub fn kernels_fingerprint() -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    for f in KERNEL_FILES {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(f.source.as_bytes());
        h.update([0]);
    }
    h.update(include_str!("../kernels/common.cuh").as_bytes());
    h.update(include_str!("../kernels/quant.cuh").as_bytes());
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The variants that passed the check on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedVariants {
    pub gpu: String,
    pub fingerprint: String,
    /// `family=variant` of every variant that passed.
    passed: BTreeSet<String>,
}

impl CheckedVariants {
    /// An empty record for `gpu` under the current kernels.
    pub fn new(gpu: &str) -> CheckedVariants {
        CheckedVariants {
            gpu: gpu.to_string(),
            fingerprint: kernels_fingerprint(),
            passed: BTreeSet::new(),
        }
    }

    /// `dir/<gpu>.txt`, the GPU's name with every character but letters and digits as `-`.
    pub fn path_in(dir: &Path, gpu: &str) -> PathBuf {
        let name: String = gpu
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        dir.join(format!("{name}.txt"))
    }

    /// The record of `gpu` in `dir`; empty when there is none, when it is unreadable, or when
    /// it was made with other kernels.
    pub fn load(dir: &Path, gpu: &str) -> CheckedVariants {
        let fresh = CheckedVariants::new(gpu);
        let Ok(text) = std::fs::read_to_string(Self::path_in(dir, gpu)) else {
            return fresh;
        };
        match Self::parse(&text) {
            Some(r) if r.gpu == fresh.gpu && r.fingerprint == fresh.fingerprint => r,
            _ => fresh,
        }
    }

    fn parse(text: &str) -> Option<CheckedVariants> {
        let mut lines = text.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let gpu = lines.next()?.strip_prefix("gpu: ")?.to_string();
        let fingerprint = lines.next()?.strip_prefix("kernels: ")?.to_string();
        let passed = lines
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        Some(CheckedVariants {
            gpu,
            fingerprint,
            passed,
        })
    }

    /// Writes the record to `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = Self::path_in(dir, &self.gpu);
        let mut text = format!(
            "{HEADER}\ngpu: {}\nkernels: {}\n",
            self.gpu, self.fingerprint
        );
        for p in &self.passed {
            text.push_str(p);
            text.push('\n');
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Notes the outcome of checking `family=variant`: a failure removes an earlier pass.
    pub fn record(&mut self, family: &str, variant: &str, passed: bool) {
        let key = format!("{family}={variant}");
        if passed {
            self.passed.insert(key);
        } else {
            self.passed.remove(&key);
        }
    }

    pub fn is_checked(&self, family: &str, variant: &str) -> bool {
        self.passed.contains(&format!("{family}={variant}"))
    }

    /// Every registered variant this record lacks, as `family=variant`.
    pub fn unchecked(&self) -> Vec<String> {
        registry::FAMILIES
            .iter()
            .flat_map(|f| f.variant_names().map(move |v| (f.name, v)))
            .filter(|(f, v)| !self.is_checked(f, v))
            .map(|(f, v)| format!("{f}={v}"))
            .collect()
    }
}

/// Where the records live: `$PLUMB_HOME/checked` (default `~/.cache/plumb/checked`).
pub fn checked_dir() -> Option<PathBuf> {
    crate::compile::cache_dir().and_then(|k| k.parent().map(|p| p.join("checked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_other_kernels_void_it() {
        let dir = std::env::temp_dir().join(format!("plumb-checked-{}", std::process::id()));
        let gpu = "NVIDIA H200 (test)";
        let mut r = CheckedVariants::new(gpu);
        r.record("matvec", "tiled", true);
        r.record("batch", "mma", true);
        r.record("batch", "mma", false);
        let path = r.save(&dir).unwrap();
        assert!(path.ends_with("NVIDIA-H200--test-.txt"), "{path:?}");
        let back = CheckedVariants::load(&dir, gpu);
        assert_eq!(back, r);
        assert!(back.is_checked("matvec", "tiled"));
        assert!(!back.is_checked("batch", "mma"));
        assert!(back.unchecked().contains(&"batch=mma".to_string()));
        assert!(!back.unchecked().contains(&"matvec=tiled".to_string()));
        // Made with other kernels: nothing is checked.
        let text = std::fs::read_to_string(&path).unwrap();
        let stale = text.replace(&r.fingerprint, "0123456789ab");
        std::fs::write(&path, stale).unwrap();
        assert!(!CheckedVariants::load(&dir, gpu).is_checked("matvec", "tiled"));
        // Another GPU has its own record.
        assert!(!CheckedVariants::load(&dir, "other").is_checked("matvec", "tiled"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
