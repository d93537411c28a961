use super::*;

fn a(s: &str) -> Amount {
    s.parse().unwrap()
}

fn budget(e: &str, d: &str) -> Budget {
    Budget { epsilon: a(e), delta: a(d) }
}

fn req(eps: &str, key: Option<&str>) -> ChargeRequest {
    ChargeRequest {
        kind: "query".into(),
        text: "SELECT COUNT(*) FROM t".into(),
        query_key: key.map(|k| k.to_string()),
        epsilon: a(eps),
        delta: Amount::ZERO,
        releases: vec![Release::Pure { epsilon: a(eps) }],
        params: serde_json::json!({}),
        data_version: "v1".into(),
    }
}

fn open(dir: &Path, b: &Budget) -> Ledger {
    Ledger::open(&dir.join("ledger.db"), b, "dpq.toml").unwrap()
}

#[test]
fn ten_tenths_fill_one_exactly_and_an_eleventh_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), &budget("1", "0"));
    for _ in 0..10 {
        l.charge(&req("0.1", None)).unwrap();
    }
    let s = l.status().unwrap();
    assert_eq!(s.spent.basic_epsilon, Amount::ONE);
    assert_eq!(s.remaining_epsilon, 0.0);
    let err = l.charge(&req("0.1", None)).unwrap_err().to_string();
    assert!(err.contains("budget exhausted") && err.contains("ε=0.1") && err.contains("remains"), "{err}");
    assert!(err.contains("lower --epsilon"), "{err}");
    // refusal recorded nothing
    assert_eq!(l.entries().unwrap().len(), 11); // budget entry + 10
}

#[test]
fn three_tenths_fit_exactly_in_point_three() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), &budget("0.3", "0"));
    for _ in 0..3 {
        l.charge(&req("0.1", None)).unwrap();
    }
    assert!(l.charge(&req("0.000000000000000001", None)).is_err());
}

#[test]
fn budget_changes_are_logged_and_cannot_go_below_spent() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), &budget("1", "1e-6"));
    l.charge(&req("0.6", None)).unwrap();
    drop(l);
    let l = open(d.path(), &budget("2", "1e-6"));
    let entries = l.entries().unwrap();
    assert_eq!(entries.iter().filter(|e| e.kind == "budget").count(), 2);
    assert!(entries.last().unwrap().text.contains("changed"));
    drop(l);
    let err = Ledger::open(&d.path().join("ledger.db"), &budget("0.5", "1e-6"), "dpq.toml").err().unwrap().to_string();
    assert!(err.contains("below what was already spent"), "{err}");
}

#[test]
fn replay_returns_the_stored_answer() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), &budget("1", "0"));
    assert!(l.replay("k1").unwrap().is_none());
    let c = l.charge(&req("0.1", Some("k1"))).unwrap();
    // charged, not yet stored: recomputable with the same seed
    match l.replay("k1").unwrap() {
        Some(Replay::Unfinished { entry, seed }) => {
            assert_eq!(entry, c.entry);
            assert_eq!(seed, c.seed);
        }
        other => panic!("{other:?}"),
    }
    l.store_result(c.entry, &serde_json::json!({"v": 42})).unwrap();
    match l.replay("k1").unwrap() {
        Some(Replay::Stored { entry, result }) => {
            assert_eq!(entry, c.entry);
            assert_eq!(result["v"], 42);
        }
        other => panic!("{other:?}"),
    }
    assert!(l.verify().unwrap().ok);
}

fn raw(d: &Path) -> Connection {
    Connection::open(d.join("ledger.db")).unwrap()
}

fn filled(d: &Path) -> Ledger {
    let mut l = open(d, &budget("5", "0"));
    for i in 0..5 {
        let c = l.charge(&req("0.1", Some(&format!("k{i}")))).unwrap();
        l.store_result(c.entry, &serde_json::json!({"i": i})).unwrap();
    }
    assert!(l.verify().unwrap().ok);
    l
}

#[test]
fn tamper_edit_is_detected_and_named() {
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    raw(d.path()).execute("UPDATE entries SET epsilon = '0.01' WHERE id = 3", []).unwrap();
    let v = l.verify().unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad, Some(3), "{v:?}");
    assert!(v.problem.unwrap().contains("edited"));
}

#[test]
fn tamper_delete_middle_and_tail_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    raw(d.path()).execute("DELETE FROM entries WHERE id = 4", []).unwrap();
    let v = l.verify().unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad, Some(4), "{v:?}");

    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    raw(d.path()).execute("DELETE FROM entries WHERE id = 6", []).unwrap();
    raw(d.path()).execute("DELETE FROM results WHERE entry_id = 6", []).unwrap();
    let v = l.verify().unwrap();
    assert!(!v.ok, "deleting the last entry must be detected");
    assert_eq!(v.first_bad, Some(6), "{v:?}");
}

#[test]
fn tamper_insert_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    let c = raw(d.path());
    // shift entries to make room and insert a forged one
    c.execute(
        "INSERT INTO entries (id, time, kind, text, query_key, epsilon, delta, releases, params, data_version, seed, prev_hash, hash)
         SELECT 100, time, kind, 'forged', NULL, epsilon, delta, releases, params, data_version, seed, hash, hash FROM entries WHERE id = 6",
        [],
    )
    .unwrap();
    let v = l.verify().unwrap();
    assert!(!v.ok);
    assert_eq!(v.first_bad, Some(7), "{v:?}");
}

#[test]
fn tamper_result_edit_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    raw(d.path()).execute("UPDATE results SET result = '{\"i\": 99}' WHERE entry_id = 2", []).unwrap();
    let v = l.verify().unwrap();
    assert_eq!(v.first_bad, Some(2));
}

#[test]
fn threads_cannot_overspend() {
    // 8 threads, each with its own connection, race for a budget allowing 5 charges
    for round in 0..20 {
        let d = tempfile::tempdir().unwrap();
        drop(open(d.path(), &budget("0.5", "0")));
        let path = d.path().join("ledger.db");
        let ok: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    s.spawn(move || {
                        let mut l = Ledger::open(&path, &budget("0.5", "0"), "dpq.toml").unwrap();
                        l.charge(&req("0.1", None)).is_ok() as usize
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(ok, 5, "round {round}");
        let l = open(d.path(), &budget("0.5", "0"));
        assert_eq!(l.status().unwrap().spent.basic_epsilon, a("0.5"));
        assert!(l.verify().unwrap().ok);
    }
}
