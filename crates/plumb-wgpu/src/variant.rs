//! The backend's two kernel variant families: how a workgroup reduces (`reduce`) and how the
//! 8-bit matvec multiplies bytes (`dot`). Each defaults to the fast choice where the adapter
//! offers it and falls back to the portable one where not; `plumb check --device wgpu` runs the
//! harness on every combination the adapter can run.

use plumb_ops::{OpError, Result};

pub use crate::shaders::{Dot, Reduce};

/// The variant families and their variants, fast first.
pub const FAMILIES: &[(&str, &[&str])] = &[
    ("reduce", &["subgroup", "workgroup"]),
    ("dot", &["native", "soft"]),
];

/// A choice of one variant per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Variants {
    pub reduce: Reduce,
    pub dot: Dot,
}

impl Default for Variants {
    fn default() -> Self {
        Variants {
            reduce: Reduce::Subgroup,
            dot: Dot::Native,
        }
    }
}

impl Variants {
    /// Selects `name` in `family` (e.g. `reduce`, `workgroup`).
    pub fn set(&mut self, family: &str, name: &str) -> Result<()> {
        match (family, name) {
            ("reduce", "subgroup") => self.reduce = Reduce::Subgroup,
            ("reduce", "workgroup") => self.reduce = Reduce::Workgroup,
            ("dot", "native") => self.dot = Dot::Native,
            ("dot", "soft") => self.dot = Dot::Soft,
            _ => {
                let known: Vec<String> = FAMILIES
                    .iter()
                    .flat_map(|(f, vs)| vs.iter().map(move |v| format!("{f}={v}")))
                    .collect();
                return Err(OpError::Unsupported {
                    op: "variant",
                    what: format!("{family}={name} (the wgpu variants: {})", known.join(", ")),
                });
            }
        }
        Ok(())
    }

    /// (family, variant) of each family, as [`Variants::set`] takes them.
    pub fn names(&self) -> [(&'static str, &'static str); 2] {
        let reduce = match self.reduce {
            Reduce::Subgroup => "subgroup",
            Reduce::Workgroup => "workgroup",
        };
        let dot = match self.dot {
            Dot::Native => "native",
            Dot::Soft => "soft",
        };
        [("reduce", reduce), ("dot", dot)]
    }

    /// `family=name` of each family, as `plumb check` prints them.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .names()
            .iter()
            .map(|(f, v)| format!("{f}={v}"))
            .collect();
        names.join(", ")
    }

    /// Every combination of variants.
    pub fn all() -> Vec<Variants> {
        let mut all = Vec::new();
        for reduce in [Reduce::Subgroup, Reduce::Workgroup] {
            for dot in [Dot::Native, Dot::Soft] {
                all.push(Variants { reduce, dot });
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_variant_can_be_set_and_nothing_else() {
        let mut seen = std::collections::HashSet::new();
        for (family, names) in FAMILIES {
            for name in *names {
                let mut v = Variants::default();
                v.set(family, name).unwrap();
                assert!(v.describe().contains(&format!("{family}={name}")));
                let mut back = Variants::default();
                for (f, n) in v.names() {
                    back.set(f, n).unwrap();
                }
                assert_eq!(back, v);
                seen.insert(v);
            }
        }
        assert_eq!(seen.len(), 3, "the default plus one change per family");
        assert_eq!(Variants::all().len(), 4);
        let e = Variants::default().set("reduce", "warp").unwrap_err();
        assert!(e.to_string().contains("reduce=workgroup"), "{e}");
    }
}
