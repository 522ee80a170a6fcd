//! Shared by the integration tests that run a scenario in a child process (a death test, a
//! seccomp filter that must not outlive the scenario).

use std::process::{Command, ExitStatus};

/// Re-run this test executable on itself for test `name` alone, with `env` set to `name`: the
/// test then runs its scenario instead (see [`in_child`]). Returns the child's exit status and
/// standard error.
pub fn rerun_self(name: &str, env: &str) -> (ExitStatus, String) {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, name)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run the child test process");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether this process is the child [`rerun_self`] started for test `name`.
pub fn in_child(name: &str, env: &str) -> bool {
    std::env::var(env).as_deref() == Ok(name)
}
