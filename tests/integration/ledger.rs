//! The ledger under real processes: races, SIGKILL crashes, tampering.

use std::process::Command;

use dpq::config::Budget;
use dpq::ledger::{ChargeRequest, Ledger};
use dpq::privacy::accountant::Release;
use dpq::privacy::amount::Amount;

use crate::util::*;

fn a(s: &str) -> Amount {
    s.parse().unwrap()
}

/// Child process of `processes_cannot_overspend`: one charge attempt.
#[test]
fn race_child() {
    let Ok(path) = std::env::var("DPQ_RACE_LEDGER") else { return };
    let budget = Budget { epsilon: a(&std::env::var("DPQ_RACE_BUDGET").unwrap()), delta: Amount::ZERO };
    let mut l = Ledger::open(std::path::Path::new(&path), &budget, "dpq.toml").unwrap();
    let req = ChargeRequest {
        kind: "query".into(),
        text: "race".into(),
        query_key: None,
        epsilon: a("0.1"),
        delta: Amount::ZERO,
        releases: vec![Release::Pure { epsilon: a("0.1") }],
        params: serde_json::json!({}),
        data_version: "v".into(),
    };
    let code = match l.charge(&req) {
        Ok(_) => 0,
        Err(dpq::ledger::LedgerError::Exhausted { .. }) => 3,
        Err(e) => {
            eprintln!("{e}");
            4
        }
    };
    std::process::exit(code);
}

/// 200 rounds of 4 processes racing for a budget that allows 2 of them: never
/// more than 2 succeed, and the ledger's spend equals the successes exactly.
#[test]
fn processes_cannot_overspend() {
    let exe = std::env::current_exe().unwrap();
    for round in 0..200 {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ledger.db");
        let budget = Budget { epsilon: a("0.2"), delta: Amount::ZERO };
        drop(Ledger::open(&path, &budget, "dpq.toml").unwrap());
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", "ledger::race_child", "--test-threads=1", "--nocapture", "-q"])
                    .env("DPQ_RACE_LEDGER", &path)
                    .env("DPQ_RACE_BUDGET", "0.2")
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<i32> = children.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1)).collect();
        let wins = codes.iter().filter(|&&c| c == 0).count();
        assert!(codes.iter().all(|&c| c == 0 || c == 3), "round {round}: unexpected exit codes {codes:?}");
        assert_eq!(wins, 2, "round {round}: {codes:?}");
        let l = Ledger::open(&path, &budget, "dpq.toml").unwrap();
        assert_eq!(l.status().unwrap().spent.basic_epsilon, a("0.1") + a("0.1"));
        assert!(l.verify().unwrap().ok);
    }
}

/// SIGKILL a querying process at random moments, many times. Afterwards the
/// chain verifies, every charge is accounted, and every answer that was printed
/// belongs to a charged entry holding that same answer.
#[test]
fn sigkill_at_random_points_never_loses_a_charge_or_shows_an_uncharged_result() {
    let (_d, data) = dataset();
    let sql = "SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind";
    // typical duration of one run
    let t0 = std::time::Instant::now();
    ok(&data, &["query", sql, "--fresh", "--format", "json", "--epsilon", "0.01"]);
    let typical = t0.elapsed().as_millis() as u64;
    let mut lcg: u64 = 0x2545F4914F6CDD1D;
    let mut shown: Vec<(i64, serde_json::Value)> = Vec::new();
    for _ in 0..30 {
        lcg = lcg.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = (lcg >> 33) % (typical + typical / 2).max(1);
        let mut child = dpq()
            .arg("--data")
            .arg(&data)
            .args(["query", sql, "--fresh", "--format", "json", "--epsilon", "0.01"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            shown.push((v["privacy"]["entry"].as_i64().unwrap(), v["rows"].clone()));
        }
    }
    let v = json(&data, &["budget", "--verify", "--format", "json"]);
    assert_eq!(v["ok"], true, "{v}");
    let log = json(&data, &["budget", "--log", "--format", "json"]);
    let entries = log["entries"].as_array().unwrap();
    let charged: Vec<i64> = entries.iter().filter(|e| e["kind"] == "query").map(|e| e["id"].as_i64().unwrap()).collect();
    // spend equals the sum of charged entries, exactly
    let total: Amount = entries.iter().filter(|e| e["kind"] == "query").map(|e| a(e["epsilon"].as_str().unwrap())).sum();
    assert_eq!(total.to_string(), log["basic_epsilon_exact"].as_str().unwrap());
    // every printed answer is a charged entry's stored answer
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    for (entry, rows) in &shown {
        assert!(charged.contains(entry), "entry {entry} printed but not charged");
        let stored: String = db.query_row("SELECT result FROM results WHERE entry_id = ?1", [entry], |r| r.get(0)).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(&stored["rows"], rows, "entry {entry}: printed answer differs from the stored one");
    }
    // charged-but-unfinished runs replay from their seed without a new charge
    let before = json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"].clone();
    let again = json(&data, &["query", sql, "--format", "json", "--epsilon", "0.01"]);
    assert_eq!(again["privacy"]["replayed"], true);
    let after = json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"].clone();
    assert_eq!(before, after);
}

#[test]
fn tampering_fails_verify_with_exit_code_1() {
    let (_d, data) = dataset();
    for e in ["0.1", "0.2", "0.3"] {
        ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", e]);
    }
    assert!(ok(&data, &["budget", "--verify"]).contains("verified"));
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    db.execute("UPDATE entries SET epsilon = '0.0001' WHERE id = 3", []).unwrap();
    let r = run(&data, &["budget", "--verify"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("entry 3"), "{}", r.stdout);
}
