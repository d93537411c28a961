//! End-to-end benchmark: the same question answered by
//!   duckdb     DuckDB's plain, non-private query on the same Parquet (in-process, `benches/peers/peers.py`)
//!   duck-bnd   DuckDB with the same per-person bounding written by hand (same bounds)
//!   opendp     OpenDP (polars API) with the same bounds and ε (if installed)
//!   df         DataFusion's plain query (dpq's engine without privacy)
//!   dpq        dpq with the dataset's fixed bounds (analysis, bounded plan, per-person
//!              bounding in the engine, noise, release; no process start, no ledger replay)
//!   dpq-1c     the same pinned to one core (`taskset -c 0`)
//!   dpq-auto   dpq with default settings (limits chosen from the data)
//! each in a fresh child process (peak RSS from wait4), median of `--runs`.
//!
//! Run: `cargo bench --bench e2e` (10 M events, 200 000 people) and
//! `cargo bench --bench e2e -- --events 100000000 --people 2000000 --runs 1`.
//! Data is generated and ingested once under target/dpq-bench/<events>-<people>/.
//! Options: --events N, --people N, --runs R, --memory-limit 2GiB, --only V,V,
//! --python PATH (a Python with duckdb, and opendp + polars for the OpenDP column;
//! default $DPQ_BENCH_PYTHON, else python3).
//! `--accuracy` instead compares, for the histogram questions, the error of
//! dpq's released answers against the true (unbounded, noiseless) answer with
//! the configured bounds and with limits chosen from the data.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dpq::dataset::Dataset;
use dpq::generate::{FileFormat, GenerateOptions};
use dpq::ingest::IngestOptions;

/// The dpq binary's allocator, so the in-process child measures what the CLI runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Q {
    /// name for peers.py --question
    key: &'static str,
    name: &'static str,
    plain: &'static str,
    dp: &'static str,
}

const QUERIES: &[Q] = &[
    Q {
        key: "emoji",
        name: "count per emoji",
        plain: "SELECT emoji, COUNT(*) FROM messages WHERE emoji IS NOT NULL GROUP BY emoji",
        dp: "SELECT emoji, COUNT(*) FROM messages WHERE emoji IS NOT NULL GROUP BY emoji",
    },
    Q {
        key: "hour",
        name: "count per hour",
        plain: "SELECT date_part('hour', ts) AS h, COUNT(*) FROM messages GROUP BY h",
        dp: "SELECT date_part('hour', ts) AS h, COUNT(*) FROM messages GROUP BY h",
    },
    Q {
        key: "cohort_mean",
        name: "mean length per cohort",
        plain: "SELECT u.age_group, AVG(m.length) FROM messages m JOIN users u ON m.user_id = u.user_id GROUP BY u.age_group",
        dp: "SELECT u.age_group, AVG(m.length) FROM messages m JOIN users u ON m.user_id = u.user_id GROUP BY u.age_group",
    },
];

const VARIANTS: &[&str] = &["duckdb", "duck-bnd", "opendp", "df", "dpq", "dpq-1c", "dpq-auto"];

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1).cloned())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Generate and ingest a dataset of about `events` events over `people` people (once).
fn dataset(events: u64, people: u64) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dpq-bench").join(format!("{events}-{people}"));
    let data = root.join("data");
    if data.join("tables/messages/manifest.json").exists() {
        return data;
    }
    let _ = std::fs::remove_dir_all(&root);
    let ds = Dataset::init_with_budget(&data, "1000000000".parse().unwrap(), "1e-6".parse().unwrap()).unwrap();
    // ~2.35 events (messages, calls, payments) per person-day at messages_per_day = 1
    let messages_per_day = events as f64 / (people as f64 * 365.0 * 2.35);
    let logs = root.join("logs");
    let t0 = Instant::now();
    let g = dpq::generate::generate(&GenerateOptions {
        users: people,
        days: 365,
        out: logs.clone(),
        seed: 1,
        format: FileFormat::Parquet,
        messages_per_day,
        progress: dpq::progress::silent(),
        ..Default::default()
    })
    .unwrap();
    eprintln!("generated {} events for {people} people in {:.1}s", g.events(), t0.elapsed().as_secs_f64());
    for t in ["emoji_catalog", "users", "messages", "calls", "payments"] {
        let s = ingest_parquet(&ds, &logs, t);
        eprintln!("ingested {t}: {} rows ({:.0} rows/s)", s.kept, s.rows_per_second());
    }
    let _ = std::fs::remove_dir_all(&logs);
    data
}

/// Child: run one of dpq's or DataFusion's variants once, print its seconds.
fn child(variant: &str, q: usize, data: &Path, mem: Option<u64>) {
    let query = &QUERIES[q];
    let secs = rt().block_on(async {
        match variant {
            "df" => {
                let cfg = datafusion::prelude::SessionConfig::new()
                    .with_target_partitions(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
                    .with_information_schema(false);
                let mut rtb = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
                if let Some(m) = mem {
                    rtb = rtb.with_memory_pool(std::sync::Arc::new(datafusion::execution::memory_pool::FairSpillPool::new(m as usize)));
                }
                let ctx = datafusion::prelude::SessionContext::new_with_config_rt(cfg, rtb.build_arc().unwrap());
                for t in ["messages", "users"] {
                    ctx.register_parquet(t, data.join("tables").join(t).to_str().unwrap(), datafusion::prelude::ParquetReadOptions::default()).await.unwrap();
                }
                let t0 = Instant::now();
                let b = ctx.sql(query.plain).await.unwrap().collect().await.unwrap();
                std::hint::black_box(b);
                t0.elapsed().as_secs_f64()
            }
            _ => {
                let t0 = Instant::now();
                let s = dpq::Session::open_with(data, dpq::SessionOptions { memory_limit: mem, ..Default::default() }).await.unwrap();
                let auto = variant == "dpq-auto";
                let o = dpq::QueryOptions::new().epsilon("1".parse().unwrap()).auto_bounds(auto).fresh(true);
                let r = s.query(query.dp, &o).await.unwrap();
                std::hint::black_box(r);
                t0.elapsed().as_secs_f64()
            }
        }
    });
    println!("{secs}");
}

/// Run one measurement in a child process; returns (seconds, peak RSS in MiB),
/// or None when the variant is not available here (no Python peer, no taskset).
fn measure(variant: &str, q: usize, data: &Path, mem: Option<&str>, python: &str) -> Option<(f64, f64)> {
    let mut cmd = match variant {
        "duckdb" | "duck-bnd" | "opendp" => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/peers.py");
            let mut c = Command::new(python);
            let (system, v) = match variant {
                "duckdb" => ("duckdb", "plain"),
                "duck-bnd" => ("duckdb", "bounded"),
                _ => ("opendp", "bounded"),
            };
            c.arg(script).args(["--system", system, "--variant", v, "--question", QUERIES[q].key, "--data", data.to_str().unwrap()]);
            // the same bounds as the dataset's dpq.toml ([defaults], messages.length)
            c.args(["--groups", "4", "--rows-per-group", "20", "--length-lo", "0", "--length-hi", "2000", "--epsilon", "1"]);
            c
        }
        _ => {
            let mut c = if variant == "dpq-1c" {
                let mut c = Command::new("taskset");
                c.args(["-c", "0"]).arg(std::env::current_exe().unwrap());
                c
            } else {
                Command::new(std::env::current_exe().unwrap())
            };
            c.args(["--child", variant, "--query", &q.to_string(), "--data", data.to_str().unwrap()]);
            if let Some(m) = mem {
                c.args(["--memory-limit", m]);
            }
            c
        }
    };
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its peak RSS
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().ok()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let mut out = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        eprintln!("{variant} on \"{}\": not measured ({})", QUERIES[q].name, err.lines().last().unwrap_or("failed"));
        return None;
    }
    let last = out.trim().lines().last().unwrap_or("nan");
    // peers.py prints {"seconds": …, "rows": …}; dpq's children print seconds
    let secs = match serde_json::from_str::<serde_json::Value>(last) {
        Ok(serde_json::Value::Object(o)) => o.get("seconds").and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
        _ => last.parse().unwrap_or(f64::NAN),
    };
    Some((secs, ru.ru_maxrss as f64 / 1024.0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if let Some(variant) = arg("--child") {
        let q: usize = arg("--query").unwrap().parse().unwrap();
        let mem = arg("--memory-limit").map(|m| dpq::config::parse_bytes(&m).unwrap());
        child(&variant, q, Path::new(&arg("--data").unwrap()), mem);
        return;
    }
    let events: u64 = arg("--events").or_else(|| std::env::var("DPQ_BENCH_EVENTS").ok()).and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let people: u64 = arg("--people").and_then(|s| s.parse().ok()).unwrap_or(events / 50);
    if std::env::args().any(|a| a == "--accuracy") {
        accuracy(&dataset(events, people));
        return;
    }
    let runs: usize = arg("--runs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let mem = arg("--memory-limit");
    let only: Option<Vec<String>> = arg("--only").map(|o| o.split(',').map(str::to_string).collect());
    let python = arg("--python").or_else(|| std::env::var("DPQ_BENCH_PYTHON").ok()).unwrap_or_else(|| "python3".into());
    let data = dataset(events, people);
    let rows = dpq::storage::manifest::Manifest::load(&data, "messages").unwrap().unwrap().rows();
    let users = dpq::storage::manifest::Manifest::load(&data, "users").unwrap().unwrap().rows();
    println!(
        "\ndpq end-to-end benchmark: {rows} messages, {users} people, {} cores, memory limit {}; seconds (median of {runs}), peak RSS MiB",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        mem.clone().unwrap_or("none".into())
    );
    print!("{:<24}", "question");
    for v in VARIANTS {
        print!(" {v:>9}");
    }
    println!("  {:>8} {:>9} {:>8} {:>9}  peak RSS dpq/duckdb", "dpq/duck", "dpq/d-bnd", "dpq/odp", "1c/2c");
    for (qi, q) in QUERIES.iter().enumerate() {
        let mut res: Vec<Option<(f64, f64)>> = Vec::new();
        for v in VARIANTS {
            if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == v)) {
                res.push(None);
                continue;
            }
            let ms: Vec<(f64, f64)> = (0..runs).filter_map(|_| measure(v, qi, &data, mem.as_deref(), &python)).collect();
            res.push((!ms.is_empty()).then(|| (median(ms.iter().map(|m| m.0).collect()), ms.iter().map(|m| m.1).fold(0.0, f64::max))));
        }
        let at = |v: &str| res[VARIANTS.iter().position(|x| *x == v).unwrap()];
        let ratio = |a: &str, b: &str| match (at(a), at(b)) {
            (Some(x), Some(y)) => format!("{:.2}", x.0 / y.0),
            _ => "n/a".into(),
        };
        print!("{:<24}", q.name);
        for r in &res {
            match r {
                Some((s, _)) => print!(" {s:>9.3}"),
                None => print!(" {:>9}", "n/a"),
            }
        }
        let rss = |v: &str| at(v).map(|m| format!("{:.0}", m.1)).unwrap_or("n/a".into());
        println!(
            "  {:>8} {:>9} {:>8} {:>9}  {}/{}",
            ratio("dpq", "duckdb"),
            ratio("dpq", "duck-bnd"),
            ratio("dpq", "opendp"),
            ratio("dpq-1c", "dpq"),
            rss("dpq"),
            rss("duckdb")
        );
    }
    if std::env::args().any(|a| a == "--no-extras") {
        return;
    }
    // start-up to first byte of the CLI on a small dataset
    let small = dataset_small();
    let bin = env!("CARGO_BIN_EXE_dpq");
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let o = Command::new(bin).args(["--data", small.to_str().unwrap(), "query", "SELECT COUNT(*) FROM calls", "--format", "json"]).output().unwrap();
        assert!(o.status.success());
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!("\ndpq start-up to answer (small dataset, replayed query, incl. process start): {:.0} ms (median of 5)", median(times));
    // ingest throughput from CSV
    let (rows, secs) = ingest_csv_throughput();
    println!("ingest from CSV: {rows} rows in {secs:.2}s = {:.0} rows/s", rows as f64 / secs);
}

/// Ingest the generator's `logs/<table>.parquet` into `ds`.
fn ingest_parquet(ds: &Dataset, logs: &Path, table: &str) -> dpq::ingest::IngestSummary {
    let o = IngestOptions {
        dataset: Some(ds.id("bench").unwrap()),
        table: table.into(),
        files: vec![logs.join(format!("{table}.parquet"))],
        force: false,
        format: None,
        progress: dpq::progress::silent(),
    };
    dpq::ingest::ingest(&ds.dir, &ds.config, &o).unwrap()
}

fn dataset_small() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dpq-bench/small");
    let data = root.join("data");
    if !data.join("tables/calls/manifest.json").exists() {
        let _ = std::fs::remove_dir_all(&root);
        let ds = Dataset::init_with_budget(&data, "1000000000".parse().unwrap(), "1e-6".parse().unwrap()).unwrap();
        let logs = root.join("logs");
        dpq::generate::generate(&GenerateOptions { users: 200, days: 30, out: logs.clone(), format: FileFormat::Parquet, ..Default::default() }).unwrap();
        for t in ["emoji_catalog", "users", "calls"] {
            ingest_parquet(&ds, &logs, t);
        }
    }
    data
}

fn ingest_csv_throughput() -> (u64, f64) {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let ds = Dataset::init_with_budget(&data, "1000000000".parse().unwrap(), "1e-6".parse().unwrap()).unwrap();
    let logs = d.path().join("logs");
    dpq::generate::generate(&GenerateOptions {
        users: 1500,
        days: 365,
        out: logs.clone(),
        format: FileFormat::Csv,
        messages_per_day: 1.0,
        ..Default::default()
    })
    .unwrap();
    let t0 = Instant::now();
    let o = IngestOptions {
        dataset: Some(ds.id("bench").unwrap()),
        table: "messages".into(),
        files: vec![logs.join("messages.csv")],
        force: false,
        format: None,
        progress: dpq::progress::silent(),
    };
    let s = dpq::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
    (s.kept, t0.elapsed().as_secs_f64())
}

/// Cell key (non-noisy columns) → value, normalising numbers so that `7` and `7.0` agree.
fn keyed(cols: &[String], rows: Vec<Vec<String>>, value_col: usize) -> std::collections::HashMap<String, f64> {
    let norm = |s: &str| s.parse::<f64>().map(|f| format!("{f}")).unwrap_or_else(|_| s.to_string());
    rows.into_iter()
        .map(|r| {
            let key: Vec<String> = (0..cols.len()).filter(|&i| i != value_col).map(|i| norm(&r[i])).collect();
            (key.join("|"), r[value_col].parse::<f64>().unwrap_or(0.0))
        })
        .collect()
}

/// Error of dpq's released histograms against the true answer: fixed bounds vs `--auto-bounds`.
fn accuracy(data: &Path) {
    use datafusion::arrow::util::display::array_value_to_string;
    let rows = dpq::storage::manifest::Manifest::load(data, "messages").unwrap().unwrap().rows();
    println!("\naccuracy against the true answer: {rows} messages, ε = 1 per query, 5 releases each");
    println!("{:<26} {:<12} {:>8} {:>14} {:>14} {:>14}", "question", "bounds", "cells", "median |err|", "mean |err|", "mean rel err");
    let rt = rt();
    rt.block_on(async {
        let session = dpq::Session::open(data).await.unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        for t in ["messages", "users"] {
            ctx.register_parquet(t, data.join("tables").join(t).to_str().unwrap(), datafusion::prelude::ParquetReadOptions::default()).await.unwrap();
        }
        for q in &QUERIES[..2] {
            let batches = ctx.sql(q.plain).await.unwrap().collect().await.unwrap();
            let ncols = batches[0].num_columns();
            let mut trows = Vec::new();
            for b in &batches {
                for r in 0..b.num_rows() {
                    trows.push((0..ncols).map(|c| array_value_to_string(b.column(c), r).unwrap()).collect::<Vec<_>>());
                }
            }
            let tcols: Vec<String> = (0..ncols).map(|i| i.to_string()).collect();
            let truth = keyed(&tcols, trows, ncols - 1);
            for auto in [false, true] {
                let o = dpq::QueryOptions::new().epsilon("1".parse().unwrap()).auto_bounds(auto).fresh(true);
                let mut errs = Vec::new();
                let mut rels = Vec::new();
                for _ in 0..5u8 {
                    let r = session.query(q.dp, &o).await.unwrap().result;
                    let cols: Vec<String> = r.columns.iter().map(|c| c.name.clone()).collect();
                    let vi = r.columns.iter().position(|c| c.noisy).unwrap();
                    let rows: Vec<Vec<String>> = r
                        .rows
                        .iter()
                        .map(|row| {
                            cols.iter()
                                .map(|c| match &row[c] {
                                    serde_json::Value::Object(o) => o["value"].to_string(),
                                    serde_json::Value::String(s) => s.clone(),
                                    serde_json::Value::Null => String::new(),
                                    v => v.to_string(),
                                })
                                .collect()
                        })
                        .collect();
                    let got = keyed(&cols, rows, vi);
                    for (k, t) in &truth {
                        let g = got.get(k).copied().unwrap_or(0.0);
                        errs.push((g - t).abs());
                        if *t > 0.0 {
                            rels.push((g - t).abs() / t);
                        }
                    }
                }
                let cells = truth.len();
                let mean = errs.iter().sum::<f64>() / errs.len() as f64;
                let rel = rels.iter().sum::<f64>() / rels.len().max(1) as f64;
                println!(
                    "{:<26} {:<12} {:>8} {:>14.0} {:>14.0} {:>13.1}%",
                    q.name,
                    if auto { "--auto-bounds" } else { "dpq.toml" },
                    cells,
                    median(errs.clone()),
                    mean,
                    rel * 100.0
                );
            }
        }
    });
}
