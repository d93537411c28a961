//! Engine tests on a small generated dataset (library level, so that pre-noise
//! bounded totals can be inspected; they are never exposed by the public API).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;
use crate::generate::{FileFormat, GenerateOptions};
use crate::ingest::IngestOptions;

/// A dataset with 200 people over 40 days, generated once per test binary.
pub fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let data = root.join("data");
        let ds = Dataset::init(&data).unwrap();
        let logs = root.join("logs");
        let opts = GenerateOptions {
            users: 200,
            days: 40,
            out: logs.clone(),
            seed: 5,
            format: FileFormat::Parquet,
            messages_per_day: 2.0,
            ..Default::default()
        };
        crate::generate::generate(&opts).unwrap();
        for t in ["emoji_catalog", "users", "messages", "calls", "payments"] {
            let o = IngestOptions { table: t.into(), files: vec![logs.join(format!("{t}.parquet"))], force: false, format: None, progress: false };
            crate::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
        }
        data
    })
}

/// A private copy of the fixture (for tests that ingest or write the ledger).
pub fn copy_fixture() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp").arg("-r").arg(fixture()).arg(d.path().join("data")).status().unwrap();
    assert!(status.success());
    d
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn params(ds: &Dataset, eps: &str) -> QueryParams {
    params_from(&ds.config, Some(eps.parse().unwrap()), None, None, None, None, None, None, false)
}

async fn prepared(engine: &Engine, sql: &str, p: &QueryParams) -> (Box<DpQuery>, Calibration) {
    match engine.prepare(sql, p).await.unwrap() {
        Prepared::Dp { query, cal, .. } => (query, cal),
        other => panic!("not a DP query: {other:?}"),
    }
}

/// Exact answer of a plain SQL query over the parquet files (test oracle only).
async fn oracle(data: &Path, sql: &str) -> Vec<datafusion::arrow::array::RecordBatch> {
    let ctx = datafusion::prelude::SessionContext::new();
    for t in ["users", "messages", "calls", "payments", "emoji_catalog"] {
        let dir = data.join("tables").join(t);
        ctx.register_parquet(t, dir.to_str().unwrap(), datafusion::prelude::ParquetReadOptions::default()).await.unwrap();
    }
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

#[test]
fn guard_refuses_unrewritten_scans() {
    rt().block_on(async {
        let ds = Dataset::open(fixture()).unwrap();
        let engine = Engine::open(&ds, None).await.unwrap();
        let ctx = engine.sessions.planning().unwrap();
        // planning works, executing a raw plan over a private table does not
        let df = ctx.sql("SELECT * FROM messages").await.unwrap();
        let err = df.collect().await.unwrap_err().to_string();
        assert!(err.contains("refusing to read private table"), "{err}");
        // public tables are fine
        assert!(ctx.sql("SELECT COUNT(*) FROM emoji_catalog").await.unwrap().collect().await.is_ok());
    });
}

#[test]
fn same_seed_same_answer_and_domains_zero_filled() {
    rt().block_on(async {
        let ds = Dataset::open(fixture()).unwrap();
        let engine = Engine::open(&ds, None).await.unwrap();
        let p = params(&ds, "1");
        let (q, cal) = prepared(&engine, "SELECT emoji, COUNT(*) AS n FROM messages GROUP BY emoji", &p).await;
        let a = engine.compute(&q, &cal, [7; 32]).await.unwrap();
        let b = engine.compute(&q, &cal, [7; 32]).await.unwrap();
        assert_eq!(a.rows, b.rows, "replay with the stored seed must reproduce the answer");
        let c = engine.compute(&q, &cal, [8; 32]).await.unwrap();
        assert_ne!(a.rows, c.rows);
        // every emoji of the public catalogue is released, used or not
        let n_catalog = crate::generate::catalog::catalog().len();
        assert_eq!(a.rows.len(), n_catalog);
    });
}

#[test]
fn global_aggregate_on_empty_input_is_still_noisy() {
    rt().block_on(async {
        let ds = Dataset::open(fixture()).unwrap();
        let engine = Engine::open(&ds, None).await.unwrap();
        let p = params(&ds, "1");
        let (q, cal) = prepared(&engine, "SELECT COUNT(*) AS n, SUM(length) AS s FROM messages WHERE length < 0", &p).await;
        let r = engine.compute(&q, &cal, [1; 32]).await.unwrap();
        assert_eq!(r.rows.len(), 1);
        let n = r.cell(0, "n").unwrap();
        assert!(n.ci_high > 0.0 && n.stddev > 0.0);
    });
}

/// Adding one person with 10⁶ events changes the bounded (pre-noise) totals by
/// at most the declared sensitivity, and changes nobody else's contribution.
#[test]
fn bounding_really_bounds_a_heavy_user() {
    let dir = copy_fixture();
    let data = dir.path().join("data");
    rt().block_on(async {
        let sql = "SELECT chat_kind, COUNT(*) AS n, SUM(length) AS s FROM messages GROUP BY chat_kind";
        let seed = [3u8; 32];
        let totals = |data: PathBuf| async move {
            let ds = Dataset::open(&data).unwrap();
            let engine = Engine::open(&ds, None).await.unwrap();
            let p = params(&ds, "1");
            let (q, cal) = prepared(&engine, sql, &p).await;
            let mut groups = bounded::Groups::new(&q).unwrap();
            let stats = bounded::stats_plan(&q, &cal).unwrap();
            let t = bounded::bounded_totals(&engine.sessions, &stats, &mut groups, cal.family, 0, &seed, 1).await.unwrap();
            let mut by_key: Vec<(String, u64, i128)> = t
                .iter()
                .map(|(id, g)| (groups.keys[*id as usize][0].to_string(), g.rows, g.values.first().map(|v| v.sum).unwrap_or(0)))
                .collect();
            by_key.sort();
            (by_key, cal.family)
        };
        let (before, family) = totals(data.clone()).await;
        // one heavy user: 10^6 long messages in both chat kinds
        let heavy = dir.path().join("heavy.csv");
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&heavy).unwrap());
            writeln!(f, "user_id,ts,chat_kind,emoji,length").unwrap();
            for i in 0..1_000_000u32 {
                let kind = if i % 2 == 0 { "group" } else { "private" };
                writeln!(f, "999999,2025-01-01T{:02}:{:02}:{:02}Z,{kind},😂,5000", (i / 3600) % 24, (i / 60) % 60, i % 60).unwrap();
            }
        }
        let ds = Dataset::open(&data).unwrap();
        let o = IngestOptions { table: "messages".into(), files: vec![heavy], force: false, format: None, progress: false };
        crate::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
        let (after, _) = totals(data.clone()).await;
        let (l0, linf) = match family {
            bounding::Family::L0Linf { max_groups_per_unit, max_rows_per_group } => (max_groups_per_unit, max_rows_per_group),
            bounding::Family::L1 { max_rows_per_unit } => (max_rows_per_unit, max_rows_per_unit),
        };
        let rows_diff: u64 = before.iter().zip(&after).map(|(a, b)| b.1 - a.1).sum();
        let sum_diff: i128 = before.iter().zip(&after).map(|(a, b)| b.2 - a.2).sum();
        assert!(rows_diff <= family.count_l1(), "rows changed by {rows_diff} > {}", family.count_l1());
        assert!(rows_diff > 0, "the heavy user must contribute something");
        for (a, b) in before.iter().zip(&after) {
            assert!(b.1 - a.1 <= linf, "per-group rows changed by more than Linf");
        }
        // length is clamped to [0, 2000]: per row ≤ 2000
        assert!(sum_diff <= (family.count_l1() as i128) * 2000, "sum changed by {sum_diff}");
        let _ = l0;
    });
}

/// Over repeated fresh runs, released counts are unbiased relative to the bounded
/// exact answer and the 95 % CI covers it 95 ± 2 % of the time.
#[test]
fn counts_are_unbiased_and_intervals_cover() {
    rt().block_on(async {
        let ds = Dataset::open(fixture()).unwrap();
        let engine = Engine::open(&ds, None).await.unwrap();
        // people per (cohort, hour): each person touches ≤ 24 groups, all kept with
        // L0 = 24, so the bounded answer equals the exact one
        let sql = "SELECT u.age_group, date_part('hour', m.ts) AS h, COUNT(DISTINCT m.user_id) AS people \
                   FROM messages m JOIN users u ON m.user_id = u.user_id GROUP BY u.age_group, h";
        let mut p = params(&ds, "1");
        p.max_groups_per_unit = Some(24);
        let (q, cal) = prepared(&engine, sql, &p).await;
        let exact = oracle(fixture(), &sql.replace("COUNT(DISTINCT m.user_id)", "COUNT(DISTINCT m.user_id)")).await;
        let mut truth = std::collections::HashMap::new();
        for b in &exact {
            for i in 0..b.num_rows() {
                let k = (
                    datafusion::common::ScalarValue::try_from_array(b.column(0), i).unwrap().to_string(),
                    datafusion::common::ScalarValue::try_from_array(b.column(1), i).unwrap().to_string(),
                );
                let v = datafusion::common::ScalarValue::try_from_array(b.column(2), i).unwrap();
                truth.insert(k, v.to_string().parse::<f64>().unwrap());
            }
        }
        let (mut n, mut covered, mut err_sum) = (0u64, 0u64, 0f64);
        let mut sd = 0.0;
        for run in 0..40u8 {
            let r = engine.compute(&q, &cal, [run; 32]).await.unwrap();
            for (i, row) in r.rows.iter().enumerate() {
                let k = (row["age_group"].as_str().unwrap().to_string(), row["h"].to_string());
                let t = truth.get(&k).copied().unwrap_or(0.0);
                let c = r.cell(i, "people").unwrap();
                let v = c.value.as_f64().unwrap();
                sd = c.stddev;
                n += 1;
                err_sum += v - t;
                // the raw symmetric interval (the lower end may be clipped at 0)
                if (v - t).abs() <= (c.ci_high - v) {
                    covered += 1;
                }
            }
        }
        assert_eq!(n, 40 * 5 * 24);
        let coverage = covered as f64 / n as f64;
        assert!((coverage - 0.95).abs() <= 0.02, "coverage {coverage}");
        let mean_err = err_sum / n as f64;
        assert!(mean_err.abs() < 5.0 * sd / (n as f64).sqrt(), "mean error {mean_err} (sd {sd})");
    });
}

#[test]
fn partition_selection_releases_only_popular_keys() {
    rt().block_on(async {
        let ds = Dataset::open(fixture()).unwrap();
        let engine = Engine::open(&ds, None).await.unwrap();
        let mut p = params(&ds, "2");
        p.delta = "1e-6".parse().unwrap();
        // date_part('year') has no domain: keys go through partition selection
        let (q, cal) = prepared(&engine, "SELECT date_part('year', ts) AS y, COUNT(*) AS n FROM messages GROUP BY y", &p).await;
        assert!(cal.selection.is_some());
        let r = engine.compute(&q, &cal, [2; 32]).await.unwrap();
        assert_eq!(r.rows.len(), 1, "one year of data, held by everyone: released");
        // a key held by one person only is never released
        let (q, cal) = prepared(&engine, "SELECT CAST(user_id AS VARCHAR) AS who, COUNT(*) AS n FROM messages GROUP BY who", &p).await;
        let r = engine.compute(&q, &cal, [2; 32]).await.unwrap();
        assert!(r.rows.is_empty(), "per-person keys must not be released: {:?}", r.rows.len());
    });
}

