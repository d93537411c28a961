//! The ledger under real processes and real attacks: races, SIGKILL crashes,
//! and the ways a privacy officer or a hostile insider would try to reset,
//! forge or read it (issue "A ledger a privacy officer can trust").

use std::process::Command;

use dpq::ledger::{Binding, ChargeRequest, Ledger};
use dpq::privacy::accountant::Release;
use dpq::privacy::amount::Amount;

use crate::util::*;

fn a(s: &str) -> Amount {
    s.parse().unwrap()
}

fn binding(eps: &str) -> Binding {
    Binding { tables: vec![], config_budget: (a(eps), Amount::ZERO), config_file: "dpq.toml".into(), policy: Default::default() }
}

/// Child process of `processes_cannot_overspend`: one charge attempt.
#[test]
fn race_child() {
    let Ok(path) = std::env::var("DPQ_RACE_LEDGER") else { return };
    let mut l = Ledger::open(std::path::Path::new(&path), &binding(&std::env::var("DPQ_RACE_BUDGET").unwrap()), "racer").unwrap();
    let req = ChargeRequest {
        kind: "query".into(),
        text: "race".into(),
        query_key: None,
        releases: vec![Release::Pure { epsilon: a("0.1") }],
        params: serde_json::json!({}),
        data_version: "v".into(),
        analyst: "racer".into(),
        quota: None,
        fresh: false,
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
        drop(Ledger::open(&path, &binding("0.2"), "setup").unwrap());
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
        let l = Ledger::open(&path, &binding("0.2"), "check").unwrap();
        assert_eq!(l.status().unwrap().totals.epsilon, a("0.1") + a("0.1"));
        assert!(l.verify(None).unwrap().ok);
    }
}

fn spent(data: &std::path::Path) -> String {
    json(data, &["budget", "--format", "json"])["basic_epsilon_exact"].as_str().unwrap().to_string()
}

/// SIGKILL a querying process at random moments, many times. Afterwards the
/// chain verifies, every charge is accounted, and every answer that was printed
/// belongs to a charged entry holding that same answer. An interrupted charge
/// ends as a recorded failure at the next run (never redrawn).
#[test]
fn sigkill_at_random_points_never_loses_a_charge_or_shows_an_uncharged_result() {
    let (_d, data) = dataset();
    let sql = "SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind";
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
    let log = json(&data, &["budget", "--log", "--limit", "100000", "--format", "json"]);
    let entries = log["entries"].as_array().unwrap();
    let charged: Vec<i64> = entries.iter().filter(|e| e["kind"] == "query").map(|e| e["id"].as_i64().unwrap()).collect();
    let total: Amount = entries.iter().filter(|e| e["kind"] == "query").map(|e| a(e["epsilon"].as_str().unwrap())).sum();
    assert_eq!(total.to_string(), log["basic_epsilon_exact"].as_str().unwrap(), "spend equals the sum of charges, exactly");
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    for (entry, rows) in &shown {
        assert!(charged.contains(entry), "entry {entry} printed but not charged");
        let stored: String = db.query_row("SELECT result FROM results WHERE charge_id = ?1", [entry], |r| r.get(0)).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(&stored["rows"], rows, "entry {entry}: printed answer differs from the stored one");
    }
    // the next run replays the last answer, or ends an interrupted charge as a
    // recorded failure (its noise was drawn: it is never drawn again); no new charge
    let before = spent(&data);
    let again = run(&data, &["query", sql, "--format", "json", "--epsilon", "0.01"]);
    if again.code == 0 {
        let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
        assert_eq!(v["privacy"]["replayed"], true);
    } else {
        assert!(again.stderr.contains("ended before storing it"), "{}", again.stderr);
        // and asking again replays that failure, free
        let third = run(&data, &["query", sql, "--format", "json", "--epsilon", "0.01"]);
        assert_eq!(third.stderr, again.stderr);
    }
    assert_eq!(before, spent(&data));
    // --fresh pays for a new draw
    ok(&data, &["query", sql, "--format", "json", "--epsilon", "0.01", "--fresh"]);
}

/// `rm ledger.db` or `: > ledger.db` no longer restores the budget: a dataset
/// that holds data refuses to run without its own ledger.
#[test]
fn removing_or_truncating_the_ledger_is_refused() {
    for how in ["rm", "truncate"] {
        let (_d, data) = dataset();
        ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", "1"]);
        match how {
            "rm" => std::fs::remove_file(data.join("ledger.db")).unwrap(),
            _ => std::fs::write(data.join("ledger.db"), b"").unwrap(),
        }
        let _ = std::fs::remove_file(data.join("ledger.db-wal"));
        let r = run(&data, &["query", "SELECT COUNT(*) FROM calls"]);
        assert_eq!(r.code, 1, "{how}: {}", r.stdout);
        assert!(r.stderr.contains("ledger.db is missing") && r.stderr.contains("restore"), "{how}: {}", r.stderr);
        assert!(run(&data, &["budget"]).code != 0, "{how}: budget must not show a fresh ledger");
    }
}

/// A ledger copied from another dataset is refused.
#[test]
fn a_foreign_ledger_is_refused() {
    let (_d1, one) = dataset();
    let (_d2, two) = dataset();
    ok(&one, &["query", "SELECT COUNT(*) FROM calls"]);
    // `two` was copied from the same base: give it its own identity by re-initialising
    let d3 = tempfile::tempdir().unwrap();
    let fresh = d3.path().join("fresh");
    ok(std::path::Path::new("."), &["init", fresh.to_str().unwrap()]);
    ok(&fresh, &["budget"]); // creates fresh's ledger with a new id
    for f in ["ledger.db", "ledger.anchor"] {
        std::fs::copy(fresh.join(f), two.join(f)).unwrap();
    }
    let _ = std::fs::remove_file(two.join("ledger.db-wal"));
    let r = run(&two, &["query", "SELECT COUNT(*) FROM calls"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("belongs to another dataset"), "{}", r.stderr);
}

/// An entry edited by hand (its ε lowered) fails `--verify` with exit 1, and the
/// next query is refused rather than admitted.
#[test]
fn an_edited_entry_blocks_the_next_query() {
    let (_d, data) = dataset();
    for e in ["0.1", "0.2", "0.3"] {
        ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", e, "--fresh"]);
    }
    assert!(ok(&data, &["budget", "--verify"]).contains("verified"));
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    // the last charge (not yet behind the verified point of a later write)
    let id: i64 = db.query_row("SELECT MAX(id) FROM entries WHERE kind = 'query'", [], |r| r.get(0)).unwrap();
    db.execute("UPDATE entries SET body = replace(body, '\"epsilon\":\"0.3\"', '\"epsilon\":\"0.0001\"') WHERE id = ?1", [id]).unwrap();
    // as if the edit came after the last verified point (kept in ledger.anchor)
    let mut anchor: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("ledger.anchor")).unwrap()).unwrap();
    let genesis: String = db.query_row("SELECT hash FROM entries WHERE id = 1", [], |r| r.get(0)).unwrap();
    anchor["verified"] = serde_json::json!({"entries": 1, "hash": genesis});
    std::fs::write(data.join("ledger.anchor"), anchor.to_string()).unwrap();
    let q = run(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.1", "--fresh"]);
    assert_eq!(q.code, 1);
    assert!(q.stderr.contains("failed verification"), "{}", q.stderr);
    let r = run(&data, &["budget", "--verify"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains(&format!("entry {id}")) || r.stdout.contains("recorded when it was found"), "{}", r.stdout);
    // once found, the failure is recorded: the ledger stays closed
    let q = run(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.1", "--fresh"]);
    assert!(q.code == 1 && q.stderr.contains("recorded when it was found"), "{}", q.stderr);
}

/// A stored result edited by hand is not served as a replay, and a deleted one
/// is noticed (not silently recomputed over whatever data is present now).
#[test]
fn edited_or_deleted_results_are_never_served() {
    let (_d, data) = dataset();
    let sql = "SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind";
    let first = json(&data, &["query", sql, "--format", "json"]);
    let entry = first["privacy"]["entry"].as_i64().unwrap();
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let text: String = db.query_row("SELECT result FROM results WHERE charge_id = ?1", [entry], |r| r.get(0)).unwrap();
    let forged = text.replacen("\"value\":", "\"value\":1234567,\"was\":", 1);
    db.execute("UPDATE results SET result = ?1 WHERE charge_id = ?2", rusqlite::params![forged, entry]).unwrap();
    let r = run(&data, &["query", sql, "--format", "json"]);
    assert_eq!(r.code, 1, "an edited result was served: {}", r.stdout);
    assert!(r.stderr.contains("was edited"), "{}", r.stderr);
    // the failure is recorded: restoring the text does not reopen the ledger
    db.execute("UPDATE results SET result = ?1 WHERE charge_id = ?2", rusqlite::params![text, entry]).unwrap();
    let r = run(&data, &["query", sql, "--format", "json"]);
    assert!(r.code == 1 && r.stderr.contains("recorded when it was found"), "{}", r.stderr);
    // a deleted result, in a fresh dataset
    let (_d, data) = dataset();
    let first = json(&data, &["query", sql, "--format", "json"]);
    let entry = first["privacy"]["entry"].as_i64().unwrap();
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    db.execute("DELETE FROM results WHERE charge_id = ?1", [entry]).unwrap();
    let r = run(&data, &["query", sql, "--format", "json"]);
    assert_eq!(r.code, 1, "a deleted result was recomputed: {}", r.stdout);
    assert!(r.stderr.contains("deleted"), "{}", r.stderr);
    assert_eq!(run(&data, &["budget", "--verify"]).code, 1);
}

/// Deleting the last entries (and editing the database's own records to
/// match) is caught by ledger.anchor; rolling back both files is caught by a
/// head published earlier.
#[test]
fn tail_truncation_is_caught_against_the_anchor() {
    let (_d, data) = dataset();
    for e in ["0.1", "0.2"] {
        ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", e, "--fresh"]);
    }
    let published = ok(&data, &["budget", "--anchor"]).trim().to_string();
    let snapshot = std::fs::read(data.join("ledger.anchor")).unwrap();
    ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.3", "--fresh"]);
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let n: i64 = db.query_row("SELECT MAX(id) FROM entries", [], |r| r.get(0)).unwrap();
    db.execute("DELETE FROM entries WHERE id > ?1", [n - 2]).unwrap();
    let r = run(&data, &["budget", "--verify"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("ledger.anchor"), "{}", r.stdout);
    assert_eq!(run(&data, &["query", "SELECT COUNT(*) FROM calls", "--fresh"]).code, 1, "a truncated ledger admits nothing");
    // a consistent rollback of both files to before the published head
    db.execute("DELETE FROM entries WHERE id > 3", []).unwrap();
    db.execute("DELETE FROM results WHERE charge_id > 2", []).unwrap();
    let h3: String = db.query_row("SELECT hash FROM entries WHERE id = 3", [], |r| r.get(0)).unwrap();
    let mut anchor: serde_json::Value = serde_json::from_slice(&snapshot).unwrap();
    anchor["committed"] = serde_json::json!({"entries": 3, "hash": h3});
    anchor["pending"] = serde_json::Value::Null;
    anchor["verified"] = serde_json::json!({"entries": 3, "hash": h3});
    anchor["broken"] = serde_json::Value::Null;
    std::fs::write(data.join("ledger.anchor"), anchor.to_string()).unwrap();
    let r = run(&data, &["budget", "--verify", "--anchor", &published]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("beyond the chain's end"), "{}", r.stdout);
}

/// No noise seed (or other secret) stays in ledger.db once a result is stored:
/// nothing that could regenerate the noise of a released answer.
#[test]
fn seeds_are_not_readable_from_the_ledger() {
    let (_d, data) = dataset();
    let v = json(&data, &["query", "SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind", "--format", "json"]);
    assert!(v["privacy"]["result_hash"].is_string());
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    let cols: Vec<String> =
        db.prepare("SELECT name FROM pragma_table_info('entries')").unwrap().query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    assert!(!cols.iter().any(|c| c.contains("seed")), "{cols:?}");
    let dump: String = db
        .prepare("SELECT body FROM entries UNION ALL SELECT result FROM results UNION ALL SELECT value FROM meta")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!dump.contains("seed"), "a seed is recorded");
}

/// With limits chosen from the data (the default) the privacy line, the JSON
/// and the ledger record the bounds that were actually applied, not dpq.toml's,
/// and the answer discloses what they cut.
#[test]
fn auto_bounds_are_recorded_as_used() {
    let (_d, data) = dataset();
    // ε = 8: enough for 150 people to choose limits (below about 26.8/ε_pick
    // people dpq keeps dpq.toml's fixed limits, and says so)
    let v = json(&data, &["query", "SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind", "--format", "json", "--epsilon", "8"]);
    let used = v["privacy"]["bounding"].as_str().unwrap().to_string();
    let note = v["notes"].as_array().unwrap().iter().find_map(|n| n.as_str().filter(|s| s.contains("chosen from the data")).map(str::to_string)).unwrap();
    assert!(note.ends_with(&used), "the note names the limits used: {note} vs {used}");
    assert!(!used.contains("≤ 100 rows"), "not dpq.toml's fixed limit: {used}");
    assert_eq!(v["bias"]["kind"], "estimated", "{}", v["bias"]);
    let share = v["bias"]["share_of_people_cut"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share));
    // the ledger's result entry records the same
    let log = json(&data, &["budget", "--log", "--format", "json"]);
    let result = log["entries"].as_array().unwrap().iter().rev().find(|e| e["kind"] == "result").unwrap().clone();
    assert_eq!(result["params"]["bounding_used"].as_str().unwrap(), used);
    let text = ok(&data, &["query", "SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind", "--auto-bounds", "--epsilon", "8"]);
    assert!(text.contains(&used), "the privacy line states the bounds used: {text}");
    // too few people for the ε: the fixed limits, said so, and the disclosure
    // says it cannot tell
    let small = json(&data, &["query", "SELECT kind, COUNT(*) FROM calls GROUP BY kind", "--format", "json", "--epsilon", "0.5"]);
    assert!(small["privacy"]["bounding"].as_str().unwrap().contains("≤ 100 rows"), "{small}");
    assert!(small["notes"].to_string().contains("too few people to choose the contribution limits"), "{small}");
}

/// An exported statement verifies standalone and rejects an edited number.
#[test]
fn the_public_statement_verifies_and_rejects_an_edited_number() {
    let (d, data) = dataset();
    ok(&data, &["query", "SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind"]);
    let head = ok(&data, &["budget", "--anchor"]).trim().to_string();
    let dir = d.path().join("statement");
    ok(&data, &["budget", "--export", dir.to_str().unwrap()]);
    assert!(dir.join("index.html").exists());
    let out = ok(std::path::Path::new("/nonexistent"), &["verify-statement", dir.to_str().unwrap(), "--anchor", &head]);
    assert!(out.contains("statement verified"), "{out}");
    let text = std::fs::read_to_string(dir.join("statement.json")).unwrap();
    let mut s: serde_json::Value = serde_json::from_str(&text).unwrap();
    let r = s["results"][0]["result"].as_str().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    let old = v["rows"][0]["count(*)"]["value"].clone();
    let edited = r.replacen(&format!("\"value\":{old}"), &format!("\"value\":{}", old.as_f64().unwrap() + 1000.0), 1);
    assert_ne!(edited, r);
    s["results"][0]["result"] = serde_json::Value::String(edited);
    std::fs::write(dir.join("statement.json"), s.to_string()).unwrap();
    let bad = run(std::path::Path::new("/nonexistent"), &["verify-statement", dir.to_str().unwrap()]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("was edited"), "{}", bad.stderr);
}

/// Budget changes go through `dpq budget set` (who and why); a hand edit of
/// [budget] in dpq.toml is refused with the command to use; lowering below what
/// is spent is refused without blocking read-only commands.
#[test]
fn budget_changes_go_through_the_ledger() {
    let (_d, data) = dataset();
    ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", "2"]);
    let toml = std::fs::read_to_string(data.join("dpq.toml")).unwrap();
    std::fs::write(data.join("dpq.toml"), toml.replacen("epsilon = 10.0", "epsilon = 100.0", 1)).unwrap();
    let r = run(&data, &["query", "SELECT COUNT(*) FROM calls", "--fresh"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("dpq budget set --epsilon 100"), "{}", r.stderr);
    assert!(run(&data, &["budget"]).code == 0, "read-only commands still work");
    std::fs::write(data.join("dpq.toml"), &toml).unwrap();
    let r = run(&data, &["--as", "dora", "budget", "set", "--epsilon", "1", "--reason", "cut"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("below what was already spent"), "{}", r.stderr);
    assert_eq!(run(&data, &["budget"]).code, 0);
    let out = ok(&data, &["--as", "dora", "budget", "set", "--epsilon", "20", "--reason", "approved by the DPO on 2026-11-29"]);
    assert!(out.contains("by dora"), "{out}");
    let toml = std::fs::read_to_string(data.join("dpq.toml")).unwrap();
    assert!(toml.contains("epsilon = \"20\""), "the budget is written as an exact decimal: {toml}");
    let log = ok(&data, &["budget", "--log"]);
    assert!(log.contains("dora") && log.contains("approved by the DPO"), "{log}");
    ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--fresh"]);
}

/// The second ledger attack's findings, each now closed.
#[test]
fn a_failure_after_the_noise_is_drawn_cannot_be_rerun_for_free() {
    let (_d, data) = dataset();
    // post-processing that fails on some noisy values: the failure is the recorded outcome
    let q = "SELECT COUNT(*) AS n FROM users WHERE age_group = '55+' HAVING CAST(CONCAT('x', CAST(COUNT(*) AS VARCHAR)) AS BIGINT) > 0";
    let first = run(&data, &["query", q, "--epsilon", "0.1"]);
    assert_eq!(first.code, 1);
    assert!(first.stderr.contains("recorded outcome") && !first.stderr.contains("'x"), "no noisy value in the message: {}", first.stderr);
    let spent = json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"].clone();
    for _ in 0..3 {
        let again = run(&data, &["query", q, "--epsilon", "0.1"]);
        assert_eq!(again.stderr, first.stderr, "the same recorded failure, not a new draw");
    }
    assert_eq!(json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"], spent, "and nothing more charged");
    assert_eq!(run(&data, &["budget", "--verify"]).code, 0);
}

#[test]
fn distinct_queries_never_share_a_replay() {
    let (_d, data) = dataset();
    let o = ["--epsilon", "1", "--format", "json"];
    let trick = "SELECT COUNT(*) AS n FROM users WHERE age_group = '80s\") OR users.age_group = Utf8(\"90s'";
    let honest = "SELECT COUNT(*) AS n FROM users WHERE age_group = '80s' OR age_group = '90s'";
    json(&data, &[&["--as", "mallory", "query", trick][..], &o[..]].concat());
    let v = json(&data, &[&["--as", "alice", "query", honest][..], &o[..]].concat());
    assert_eq!(v["privacy"]["replayed"], false, "alice's question is not mallory's");
}

#[test]
fn a_mistyped_published_head_does_not_close_the_ledger() {
    let (_d, data) = dataset();
    ok(&data, &["query", "SELECT COUNT(*) FROM calls"]);
    let bad = format!("999:{}", "0".repeat(64));
    assert_eq!(run(&data, &["budget", "--verify", "--anchor", &bad]).code, 1);
    ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--fresh"]);
}

#[test]
fn quotas_in_analysts_toml_are_enforced() {
    let (_d, data) = dataset();
    std::fs::write(data.join("analysts.toml"), "[analysts.bob]\nepsilon = \"0.5\"\n").unwrap();
    ok(&data, &["--as", "bob", "query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.4"]);
    let r = run(&data, &["--as", "bob", "query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.2", "--fresh"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("quota"), "{}", r.stderr);
    ok(&data, &["--as", "carol", "query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.2", "--fresh"]);
}

#[test]
fn a_planted_trigger_closes_the_ledger_and_a_reopening_is_recorded() {
    let (_d, data) = dataset();
    ok(&data, &["query", "SELECT COUNT(*) FROM calls"]);
    let db = rusqlite::Connection::open(data.join("ledger.db")).unwrap();
    db.execute_batch("CREATE TRIGGER t BEFORE INSERT ON results BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END;").unwrap();
    let r = run(&data, &["query", "SELECT COUNT(*) FROM calls", "--fresh"]);
    assert!(r.code == 1 && r.stderr.contains("schema"), "{}", r.stderr);
    assert_eq!(run(&data, &["budget", "--verify"]).code, 1);
    // removing it is not enough: the failure was recorded …
    db.execute_batch("DROP TRIGGER t;").unwrap();
    assert_eq!(run(&data, &["query", "SELECT COUNT(*) FROM calls", "--fresh"]).code, 1);
    // … until someone reopens the verified ledger, which the ledger records
    ok(&data, &["--as", "dpo", "budget", "reopen", "--reason", "trigger removed after investigation"]);
    ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--fresh"]);
    assert!(ok(&data, &["budget", "--log"]).contains("trigger removed after investigation"));
}

#[test]
fn an_edited_statement_page_is_caught() {
    let (d, data) = dataset();
    ok(&data, &["query", "SELECT COUNT(*) FROM calls"]);
    let dir = d.path().join("statement");
    ok(&data, &["budget", "--export", dir.to_str().unwrap()]);
    ok(&data, &["verify-statement", dir.to_str().unwrap()]);
    let page = std::fs::read_to_string(dir.join("index.html")).unwrap();
    std::fs::write(dir.join("index.html"), page.replacen("0.5", "0.05", 1)).unwrap();
    let r = run(std::path::Path::new("/nonexistent"), &["verify-statement", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("index.html"), "{}", r.stderr);
}
