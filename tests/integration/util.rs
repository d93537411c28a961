//! Helpers: run the real `dpq` binary on temporary dataset directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn dpq() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dpq"));
    c.env("DPQ_NO_PROGRESS", "1");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn run(data: &Path, args: &[&str]) -> Run {
    dpq().arg("--data").arg(data).args(args).output().expect("dpq runs").into()
}

pub fn ok(data: &Path, args: &[&str]) -> String {
    let r = run(data, args);
    assert_eq!(r.code, 0, "dpq {args:?} failed:\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
    r.stdout
}

pub fn json(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = ok(data, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A small ingested dataset (150 people, 30 days), built once; tests copy it.
pub fn base_dataset() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let data = root.join("data");
        ok(Path::new("."), &["init", data.to_str().unwrap()]);
        let logs = root.join("logs");
        ok(Path::new("."), &["generate", "--users", "150", "--days", "30", "--out", logs.to_str().unwrap(), "--seed", "3"]);
        for t in ["emoji_catalog", "users", "messages", "calls", "payments"] {
            ok(&data, &["ingest", t, logs.join(format!("{t}.csv")).to_str().unwrap()]);
        }
        data
    })
}

/// A private copy of the base dataset.
pub fn dataset() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let st = Command::new("cp").arg("-r").arg(base_dataset()).arg(&data).status().unwrap();
    assert!(st.success());
    (d, data)
}

/// A fresh dataset holding only `messages`, generated for `users` people over
/// `days` days (for tests that need their own data shape).
pub fn messages_dataset(users: u32, days: u32, seed: u64) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let logs = d.path().join("logs");
    ok(d.path(), &["init", data.to_str().unwrap()]);
    let (users, days, seed) = (users.to_string(), days.to_string(), seed.to_string());
    ok(d.path(), &["generate", "--users", &users, "--days", &days, "--out", logs.to_str().unwrap(), "--seed", &seed]);
    ok(&data, &["ingest", "messages", logs.join("messages.csv").to_str().unwrap()]);
    (d, data)
}
