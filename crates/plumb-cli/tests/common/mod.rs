//! Running the `plumb` binary as a user does, for the CLI tests.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Command, Output};

/// `plumb ARGS`, waited for.
pub fn plumb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(args)
        .output()
        .expect("running plumb")
}

/// stdout then stderr, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `plumb ARGS`, which must succeed.
pub fn ok(args: &[&str]) -> Output {
    let o = plumb(args);
    assert!(o.status.success(), "plumb {args:?} failed:\n{}", text(&o));
    o
}
