//! Ledger call time against ledger size: a fresh call (charge + store the
//! result) and a replayed call (hash-checked replay + status), each including
//! opening the ledger as a CLI process does, at 10, 1 000, 10 000 and 100 000
//! entries. The entries are made through the library (`Ledger::charge_batch`).
//!
//!     cargo bench --bench ledger            (DPQ_BENCH_MAX=100000 by default)
//!
//! A constant-cost ledger shows flat columns; figures in docs/performance.md.

use std::time::Instant;

use dpq::ledger::{Binding, ChargeRequest, Ledger, Replay};
use dpq::privacy::accountant::Release;
use dpq::privacy::amount::Amount;

fn req(i: u64) -> ChargeRequest {
    ChargeRequest {
        kind: "query".into(),
        text: format!("SELECT COUNT(*) FROM messages WHERE x = {i}"),
        query_key: Some(format!("key-{i}")),
        releases: vec![Release::Pure { epsilon: "0.000001".parse().unwrap() }],
        params: serde_json::json!({ "mechanism": "laplace" }),
        data_version: "v1".into(),
        analyst: "bench".into(),
        quota: None,
        fresh: false,
    }
}

fn main() {
    let max: u64 = std::env::var("DPQ_BENCH_MAX").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let binding = Binding {
        tables: vec![],
        config_budget: ("1000000".parse::<Amount>().unwrap(), "1e-6".parse().unwrap()),
        config_file: "dpq.toml".into(),
        policy: Default::default(),
    };
    let mut l = Ledger::open(&path, &binding, "bench").unwrap();
    println!("{:>9}  {:>12}  {:>12}  {:>12}", "entries", "fresh ms", "replay ms", "status ms");
    let mut made = 1u64;
    let mut next = 0u64;
    for size in [10u64, 1_000, 10_000, 100_000].into_iter().filter(|&s| s <= max) {
        while made < size {
            let n = (size - made).min(10_000);
            let batch: Vec<ChargeRequest> = (0..n).map(|i| req(next + i)).collect();
            next += n;
            made += l.charge_batch(&batch).unwrap() as u64;
        }
        let runs = 20;
        // a fresh call: open, charge, store the result
        let t = Instant::now();
        for i in 0..runs {
            let mut l = Ledger::open(&path, &binding, "bench").unwrap();
            let c = l.charge(&req(1_000_000_000 + size * 100 + i)).unwrap();
            l.store_result(c.entry, &serde_json::json!({"rows": [i]}), "bench", serde_json::json!({})).unwrap();
        }
        let fresh = t.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        made += 2 * runs;
        // a replayed call: open, hash-checked replay, status
        let key = format!("key-{}", 1_000_000_000 + size * 100);
        let t = Instant::now();
        for _ in 0..runs {
            let l = Ledger::open(&path, &binding, "bench").unwrap();
            match l.replay(&key).unwrap() {
                Some(Replay::Stored(_)) => {}
                other => panic!("{other:?}"),
            }
            l.status().unwrap();
        }
        let replay = t.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        let t = Instant::now();
        for _ in 0..runs {
            l.status().unwrap();
        }
        let status = t.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        println!("{size:>9}  {fresh:>12.2}  {replay:>12.2}  {status:>12.3}");
    }
}
