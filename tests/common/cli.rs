//! The real binary's command line, for tests that set things up the way an operator does.

use std::path::Path;

/// Runs the real binary's CLI with `--config CONFIG`; returns stdout, asserting success (stderr,
/// with token values redacted, in the failure message).
pub fn cli_with(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bentogate"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "bentogate {args:?}: {}",
        bentogate::token::redact_values(&String::from_utf8_lossy(&out.stderr))
    );
    String::from_utf8(out.stdout).unwrap()
}
