//! Helpers shared by the preload library's end-to-end tests (`preload.rs`, `live.rs`).
#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The profile directory the test runs from (`target/release`), where cargo puts the libraries.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <profile>/deps")
        .to_path_buf()
}

pub fn preload_so() -> PathBuf {
    let p = std::env::var_os("SQLALLOC_PRELOAD_SO")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("libsqlalloc_preload.so"));
    assert!(
        p.exists(),
        "{} is missing: build it with `make preload` (cargo build --release -p sqlalloc_preload)",
        p.display()
    );
    p
}

/// A fresh directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sqlalloc-preload-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A command with none of our variables inherited.
pub fn command(program: &Path) -> Command {
    let mut c = Command::new(program);
    for v in [
        "LD_PRELOAD",
        "SQLALLOC",
        "SQLALLOC_REPORT",
        "SQLALLOC_REPORT_INTERVAL",
        "SQLALLOC_LISTEN",
    ] {
        c.env_remove(v);
    }
    c
}

/// The same command under the preload library with `SQLALLOC=spec` (`None`: unset).
pub fn preloaded(program: &Path, spec: Option<&str>) -> Command {
    let mut c = command(program);
    c.env("LD_PRELOAD", preload_so());
    if let Some(spec) = spec {
        c.env("SQLALLOC", spec);
    }
    c
}

pub struct Run {
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut c: Command, stdin: Option<&Path>) -> Run {
    if let Some(f) = stdin {
        c.stdin(std::fs::File::open(f).unwrap());
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("spawn");
    let r = Run {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    assert!(
        status.success(),
        "{c:?} failed ({status}); stderr:\n{}",
        r.stderr
    );
    r
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("report {} not written: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"))
}

pub fn int(v: &Value, path: &str) -> i64 {
    v.pointer(path)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{path} missing or not an integer in {v}"))
}

/// Exactly one line on stderr, ours, containing every string of `needles`.
pub fn assert_one_line(stderr: &str, needles: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    assert!(lines[0].starts_with("sqlalloc: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {stderr:?}");
    }
}
