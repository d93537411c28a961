use std::path::Path;

use proptest::prelude::*;
use rusqlite::Connection;

use super::*;

fn a(s: &str) -> Amount {
    s.parse().unwrap()
}

fn binding(e: &str, d: &str) -> Binding {
    Binding { tables: vec![], config_budget: (a(e), a(d)), config_file: "dpq.toml".into(), policy: Default::default() }
}

fn pure(eps: &str) -> Vec<Release> {
    vec![Release::Pure { epsilon: a(eps) }]
}

fn req(eps: &str, key: Option<&str>) -> ChargeRequest {
    ChargeRequest {
        kind: "query".into(),
        text: format!("q {eps}"),
        query_key: key.map(|k| k.to_string()),
        releases: pure(eps),
        params: serde_json::json!({}),
        data_version: "v".into(),
        analyst: "alice".into(),
        quota: None,
        fresh: false,
    }
}

fn open(dir: &Path, e: &str, d: &str) -> Ledger {
    Ledger::open(&dir.join("ledger.db"), &binding(e, d), "alice").unwrap()
}

fn raw(d: &Path) -> Connection {
    Connection::open(d.join("ledger.db")).unwrap()
}

#[test]
fn ten_tenths_fill_one_exactly_and_an_eleventh_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), "1", "1e-6");
    for _ in 0..10 {
        l.charge(&req("0.1", None)).unwrap();
    }
    let s = l.status().unwrap();
    assert_eq!(s.totals.epsilon, Amount::ONE);
    assert_eq!(s.remaining_epsilon(), Amount::ZERO);
    let e = l.charge(&req("0.000000000000000001", None)).unwrap_err();
    assert!(matches!(e, LedgerError::Exhausted { .. }), "{e}");
    assert!(e.to_string().contains("budget exhausted"));
    // nothing was recorded by the refusal: genesis + 10 charges
    assert_eq!(l.status().unwrap().entries, 11);
}

#[test]
fn three_tenths_fit_exactly_in_point_three() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), "0.3", "1e-6");
    for _ in 0..3 {
        l.charge(&req("0.1", None)).unwrap();
    }
    assert!(l.charge(&req("0.1", None)).is_err());
}

#[test]
fn budget_changes_record_who_and_why_and_never_go_below_spent() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), "1", "1e-6");
    l.charge(&req("0.6", None)).unwrap();
    let e = l.set_budget(Budget { epsilon: a("0.5"), delta: a("1e-6"), rule: Rule::Basic }, "cut", "bob", "dpq.toml").unwrap_err();
    assert!(matches!(e, LedgerError::BelowSpent { .. }), "{e}");
    let st = l.set_budget(Budget { epsilon: a("2"), delta: a("1e-6"), rule: Rule::Basic }, "new fiscal year", "bob", "dpq.toml").unwrap();
    assert_eq!(st.remaining_epsilon(), a("1.4"));
    let last = l.entries(None, None).unwrap().pop().unwrap();
    assert_eq!((last.kind.as_str(), last.analyst.as_str()), ("budget", "bob"));
    assert!(last.text.contains("new fiscal year"));
    assert!(l.verify(None).unwrap().ok);
}

#[test]
fn a_hand_edited_config_budget_blocks_charges_but_not_reading() {
    let d = tempfile::tempdir().unwrap();
    drop(open(d.path(), "1", "1e-6"));
    let mut l = Ledger::open(&d.path().join("ledger.db"), &binding("100", "1e-6"), "alice").unwrap();
    let e = l.charge(&req("0.1", None)).unwrap_err().to_string();
    assert!(e.contains("dpq budget set --epsilon 100"), "{e}");
    let s = l.status().unwrap();
    assert_eq!(s.budget.epsilon, Amount::ONE);
    assert!(s.config_drift.is_some());
}

#[test]
fn replay_returns_the_stored_answer_and_unfinished_charges_are_finished_once() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), "1", "1e-6");
    assert!(l.replay("k").unwrap().is_none());
    let c = l.charge(&req("0.1", Some("k"))).unwrap();
    // charged, not yet answered (as after a crash): the next run finishes it
    assert!(matches!(l.replay("k").unwrap(), Some(Replay::Unfinished { entry, .. }) if entry == c.entry));
    let first = l.store_result(c.entry, &serde_json::json!({"v": 1}), "alice", serde_json::json!({})).unwrap();
    // a second process that finished it too gets the first answer, and nothing is stored
    let second = l.store_result(c.entry, &serde_json::json!({"v": 2}), "alice", serde_json::json!({})).unwrap();
    assert_eq!(second.result, serde_json::json!({"v": 1}));
    assert_eq!(first.result_hash, second.result_hash);
    match l.replay("k").unwrap() {
        Some(Replay::Stored(s)) => assert_eq!(s.result, serde_json::json!({"v": 1})),
        other => panic!("{other:?}"),
    }
    let v = l.verify(None).unwrap();
    assert!(v.ok && v.unfinished.is_empty(), "{v:?}");
}

/// No seed, key or other secret is stored: the schema has no such column, and
/// after a charge and its result nothing in the file looks like one.
#[test]
fn the_ledger_holds_no_secret() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), "1", "1e-6");
    let c = l.charge(&req("0.1", Some("k"))).unwrap();
    l.store_result(c.entry, &serde_json::json!({"v": 1}), "alice", serde_json::json!({})).unwrap();
    let conn = raw(d.path());
    let cols: Vec<String> =
        conn.prepare("SELECT name FROM pragma_table_info('entries')").unwrap().query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    assert!(!cols.iter().any(|c| c.contains("seed")), "{cols:?}");
    let bodies: Vec<String> = conn.prepare("SELECT body FROM entries").unwrap().query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    assert!(bodies.iter().all(|b| !b.contains("seed")));
}

fn filled(d: &Path) -> Ledger {
    let mut l = open(d, "10", "1e-6");
    for i in 0..5 {
        let c = l.charge(&req("0.1", Some(&format!("k{i}")))).unwrap();
        l.store_result(c.entry, &serde_json::json!({"i": i}), "alice", serde_json::json!({})).unwrap();
    }
    l
}

/// Move the anchored verification point (as if the edit came after it).
fn verified_at(d: &Path, entries: i64) {
    let path = d.join("ledger.db");
    let mut a = anchor::read(&path).unwrap().unwrap();
    let h: String = raw(d).query_row("SELECT hash FROM entries WHERE id = ?1", params![entries], |r| r.get(0)).unwrap();
    a.verified = Some(Head { entries, hash: h });
    anchor::write(&path, &a).unwrap();
}

#[test]
fn an_edited_amount_after_the_verified_point_blocks_charges_and_replays() {
    let d = tempfile::tempdir().unwrap();
    let mut l = filled(d.path());
    verified_at(d.path(), 1);
    raw(d.path()).execute("UPDATE entries SET body = replace(body, '\"epsilon\":\"0.1\"', '\"epsilon\":\"0.01\"') WHERE id = 4", []).unwrap();
    // the incremental check every decision makes catches it, without a full verify
    assert!(matches!(l.replay("k0"), Err(LedgerError::Broken { .. })));
    assert!(matches!(l.charge(&req("0.1", None)), Err(LedgerError::Broken { .. })));
    let v = l.verify(None).unwrap();
    assert!(!v.ok && v.first_bad == Some(4), "{v:?}");
}

#[test]
fn moving_the_verification_point_in_the_database_does_nothing() {
    // format 1 kept the verified point in `meta`, where an edit could skip the check
    let d = tempfile::tempdir().unwrap();
    let mut l = filled(d.path());
    verified_at(d.path(), 1);
    raw(d.path()).execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('verified', '11:x')", []).unwrap();
    raw(d.path()).execute("UPDATE entries SET body = replace(body, '\"epsilon\":\"0.1\"', '\"epsilon\":\"0.01\"') WHERE id = 6", []).unwrap();
    assert!(matches!(l.charge(&req("0.1", None)), Err(LedgerError::Broken { .. })));
}

#[test]
fn a_failed_check_is_sticky_until_the_files_are_restored() {
    let d = tempfile::tempdir().unwrap();
    let mut l = filled(d.path());
    let db = d.path().join("ledger.db");
    raw(d.path()).query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    let backup_db = std::fs::read(&db).unwrap();
    let backup_anchor = std::fs::read(anchor::path(&db)).unwrap();
    let body: String = raw(d.path()).query_row("SELECT body FROM entries WHERE id = 4", [], |r| r.get(0)).unwrap();
    raw(d.path()).execute("UPDATE entries SET body = replace(body, '\"epsilon\":\"0.1\"', '\"epsilon\":\"0.01\"') WHERE id = 4", []).unwrap();
    assert!(!l.verify(None).unwrap().ok);
    // undoing the edit does not clear the record of it
    raw(d.path()).execute("UPDATE entries SET body = ?1 WHERE id = 4", params![body]).unwrap();
    let e = l.charge(&req("0.1", None)).unwrap_err();
    assert!(e.to_string().contains("recorded when it was found"), "{e}");
    assert!(!l.verify(None).unwrap().ok);
    assert!(l.health().is_some());
    // restoring both files from a backup does
    drop(l);
    for f in ["ledger.db-wal", "ledger.db-shm"] {
        let _ = std::fs::remove_file(d.path().join(f));
    }
    std::fs::write(&db, backup_db).unwrap();
    std::fs::write(anchor::path(&db), backup_anchor).unwrap();
    let mut l = open(d.path(), "10", "1e-6");
    assert!(l.health().is_none());
    l.charge(&req("0.1", None)).unwrap();
}

#[test]
fn an_edited_entry_before_the_verified_point_is_caught_by_the_anchor_or_full_verify() {
    let d = tempfile::tempdir().unwrap();
    let mut l = filled(d.path());
    raw(d.path()).execute("UPDATE entries SET body = replace(body, '\"epsilon\":\"0.1\"', '\"epsilon\":\"0.01\"') WHERE id = 2", []).unwrap();
    assert!(!l.verify(None).unwrap().ok);
    // rewriting every following hash to hide it changes the head: the anchor disagrees
    let bodies: Vec<(i64, String)> = raw(d.path())
        .prepare("SELECT id, body FROM entries ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut prev = GENESIS_PREV.to_string();
    for (id, body) in bodies {
        let mut e: serde_json::Value = serde_json::from_str(&body).unwrap();
        e["prev_hash"] = serde_json::Value::String(prev.clone());
        let body = e.to_string();
        let h = Entry::compute_hash(&body, &prev);
        raw(d.path()).execute("UPDATE entries SET body = ?1, prev_hash = ?2, hash = ?3 WHERE id = ?4", params![body, prev, h, id]).unwrap();
        prev = h;
    }
    let v = l.verify(None).unwrap();
    assert!(!v.ok, "{v:?}");
    assert!(v.problem.unwrap().contains("ledger.anchor"));
    assert!(l.charge(&req("0.1", None)).is_err());
}

#[test]
fn deleting_the_tail_is_caught_by_the_anchor() {
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    let n = l.status().unwrap().entries;
    raw(d.path()).execute("DELETE FROM entries WHERE id >= ?1", params![n - 1]).unwrap();
    let v = l.verify(None).unwrap();
    assert!(!v.ok && v.problem.as_deref().unwrap_or("").contains("ledger.anchor"), "{v:?}");
    let mut l = l;
    assert!(matches!(l.charge(&req("0.1", None)), Err(LedgerError::Broken { .. })));
}

#[test]
fn a_rewritten_head_with_its_own_hash_recomputed_is_caught() {
    // lower the running totals in the head entry and recompute its hash: the
    // entry is self-consistent, but the anchor holds the old head
    let d = tempfile::tempdir().unwrap();
    let mut l = filled(d.path());
    let (id, body, prev): (i64, String, String) =
        raw(d.path()).query_row("SELECT id, body, prev_hash FROM entries ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
    let mut e: serde_json::Value = serde_json::from_str(&body).unwrap();
    e["totals"]["epsilon"] = serde_json::Value::String("0".into());
    let body = e.to_string();
    let h = Entry::compute_hash(&body, &prev);
    raw(d.path()).execute("UPDATE entries SET body = ?1, hash = ?2 WHERE id = ?3", params![body, h, id]).unwrap();
    assert!(matches!(l.charge(&req("0.1", None)), Err(LedgerError::Broken { .. })));
    assert!(matches!(l.replay("k0"), Err(LedgerError::Broken { .. })));
}

#[test]
fn an_edited_index_column_never_makes_a_charge_look_unfinished() {
    // unfinished charges are finished with fresh noise and no new charge; an
    // attacker who could make an answered charge look unfinished would get a
    // second draw for free
    for edit in [
        "UPDATE entries SET charge_id = NULL WHERE kind = 'result' AND charge_id = 2",
        "UPDATE entries SET kind = 'budget' WHERE kind = 'result' AND charge_id = 2",
        "UPDATE entries SET charge_id = 999 WHERE kind = 'result' AND charge_id = 2",
    ] {
        let d = tempfile::tempdir().unwrap();
        let l = filled(d.path());
        raw(d.path()).execute(edit, []).unwrap();
        raw(d.path()).execute("DELETE FROM results WHERE charge_id = 2", []).unwrap();
        let r = l.replay("k0");
        assert!(matches!(r, Err(LedgerError::Broken { .. })), "{edit}: {r:?}");
    }
    // hiding the later of two charges with one key from the index is caught too
    let d = tempfile::tempdir().unwrap();
    let mut l = filled(d.path());
    let mut again = req("0.1", Some("k0"));
    again.fresh = true;
    let c = l.charge(&again).unwrap();
    raw(d.path()).execute("UPDATE entries SET query_key = NULL WHERE id = ?1", params![c.entry]).unwrap();
    assert!(matches!(l.replay("k0"), Err(LedgerError::Broken { .. })));
}

#[test]
fn an_edited_dataset_id_is_refused_on_open() {
    let d = tempfile::tempdir().unwrap();
    drop(filled(d.path()));
    raw(d.path()).execute("UPDATE meta SET value = 'abc' WHERE key = 'dataset'", []).unwrap();
    let Err(e) = Ledger::open(&d.path().join("ledger.db"), &binding("10", "1e-6"), "alice") else { panic!("opened") };
    assert!(matches!(e, LedgerError::Broken { .. }), "{e}");
}

#[test]
fn a_key_charged_meanwhile_is_not_charged_twice() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), "10", "1e-6");
    let first = l.charge(&req("0.1", Some("k"))).unwrap();
    let e = l.charge(&req("0.1", Some("k"))).unwrap_err();
    assert!(matches!(e, LedgerError::AlreadyCharged { entry } if entry == first.entry), "{e}");
    assert_eq!(l.status().unwrap().totals.epsilon, a("0.1"));
    let mut fresh = req("0.1", Some("k"));
    fresh.fresh = true;
    l.charge(&fresh).unwrap();
    assert_eq!(l.status().unwrap().totals.epsilon, a("0.2"));
}

#[test]
fn charges_from_threads_each_get_their_own_entry() {
    let d = tempfile::tempdir().unwrap();
    drop(open(d.path(), "100", "1e-6"));
    let path = d.path().join("ledger.db");
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut l = Ledger::open(&path, &binding("100", "1e-6"), "t").unwrap();
                (0..8)
                    .map(|i| {
                        let c = l.charge(&req("0.1", Some(&format!("t{t}-{i}")))).unwrap();
                        l.store_result(c.entry, &serde_json::json!({ "t": t, "i": i }), "t", serde_json::json!({})).unwrap();
                        c.entry
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<i64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 32, "every charge got its own entry");
    let l = open(d.path(), "100", "1e-6");
    for t in 0..4 {
        for i in 0..8 {
            match l.replay(&format!("t{t}-{i}")).unwrap() {
                Some(Replay::Stored(s)) => assert_eq!(s.result, serde_json::json!({ "t": t, "i": i })),
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(l.verify(None).unwrap().ok);
}

#[test]
fn inserting_or_deleting_a_middle_entry_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    raw(d.path()).execute("DELETE FROM entries WHERE id = 3", []).unwrap();
    assert!(!l.verify(None).unwrap().ok);
}

#[test]
fn an_edited_or_deleted_result_is_never_served() {
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    raw(d.path()).execute("UPDATE results SET result = '{\"i\":42}' WHERE charge_id = 2", []).unwrap();
    assert!(matches!(l.replay("k0"), Err(LedgerError::Broken { .. })), "an edited result is refused");
    assert!(!l.verify(None).unwrap().ok);
    let d = tempfile::tempdir().unwrap();
    let l = filled(d.path());
    raw(d.path()).execute("DELETE FROM results WHERE charge_id = 2", []).unwrap();
    assert!(matches!(l.replay("k0"), Err(LedgerError::Broken { .. })), "a deleted result is refused, not recomputed");
    let v = l.verify(None).unwrap();
    assert!(!v.ok && v.problem.unwrap().contains("deleted"));
}

#[test]
fn a_published_anchor_catches_a_consistent_rollback() {
    let d = tempfile::tempdir().unwrap();
    let mut l = filled(d.path());
    let published = l.status().unwrap().head;
    l.charge(&req("0.1", None)).unwrap();
    assert!(l.verify(Some(&published)).unwrap().ok, "the chain extends the published head");
    let wrong: Head = format!("{}:{}", published.entries, "0".repeat(64)).parse().unwrap();
    assert!(!l.verify(Some(&wrong)).unwrap().ok);
    let beyond: Head = format!("{}:{}", published.entries + 10, published.hash).parse().unwrap();
    assert!(!l.verify(Some(&beyond)).unwrap().ok);
}

#[test]
fn a_missing_or_foreign_ledger_is_refused_when_the_dataset_holds_data() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("ledger.db");
    let with_data = Binding { tables: vec![("messages".into(), Some("abc".into()))], ..binding("1", "1e-6") };
    assert!(matches!(Ledger::open(&path, &with_data, "x"), Err(LedgerError::Missing { .. })));
    // an empty file is no ledger either
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(Ledger::open(&path, &with_data, "x"), Err(LedgerError::Missing { .. })));
    std::fs::remove_file(&path).unwrap();
    let l = open(d.path(), "1", "1e-6");
    let id = l.dataset().to_string();
    drop(l);
    assert!(matches!(Ledger::open(&path, &with_data, "x"), Err(LedgerError::Foreign { .. })));
    let mine = Binding { tables: vec![("messages".into(), Some(id))], ..binding("1", "1e-6") };
    assert!(Ledger::open(&path, &mine, "x").is_ok());
}

#[test]
fn quotas_are_enforced_with_the_budget() {
    let d = tempfile::tempdir().unwrap();
    let mut l = open(d.path(), "10", "1e-6");
    let mut r = req("0.4", None);
    r.quota = Some((a("1"), a("0")));
    l.charge(&r).unwrap();
    l.charge(&r).unwrap();
    let e = l.charge(&r).unwrap_err();
    assert!(matches!(e, LedgerError::Quota { .. }), "{e}");
    let mut other = req("0.4", None);
    other.analyst = "carol".into();
    other.quota = Some((a("1"), a("0")));
    l.charge(&other).unwrap();
    let by = l.by_analyst().unwrap();
    assert_eq!(by.iter().find(|(a, _)| a == "alice").unwrap().1.epsilon, a("0.8"));
    assert_eq!(by.iter().find(|(a, _)| a == "carol").unwrap().1.epsilon, a("0.4"));
}

#[test]
fn threads_cannot_overspend() {
    let d = tempfile::tempdir().unwrap();
    drop(open(d.path(), "1", "1e-6"));
    let path = d.path().join("ledger.db");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut l = Ledger::open(&path, &binding("1", "1e-6"), "t").unwrap();
                (0..10).filter(|_| l.charge(&req("0.1", None)).is_ok()).count()
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(ok, 10);
    let l = open(d.path(), "1", "1e-6");
    assert_eq!(l.status().unwrap().totals.epsilon, Amount::ONE);
    assert!(l.verify(None).unwrap().ok);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Random sequences of charges (pure, Gaussian, approximate), results and
    /// budget raises: the running totals always equal the sum of what was
    /// charged, nothing admitted ever exceeds the budget in force, the O(1)
    /// status agrees with a full recomputation, and the ledger verifies.
    #[test]
    fn ledger_invariants(ops in proptest::collection::vec((0u8..4, 1u64..400, any::<bool>()), 1..30)) {
        let d = tempfile::tempdir().unwrap();
        let mut l = open(d.path(), "2", "1e-5");
        let mut charged: Vec<Release> = Vec::new();
        let mut budget = a("2");
        for (op, x, store) in ops {
            let amount = Amount::from_atto(x as u128 * 1_000_000_000_000_000);
            let releases = match op {
                0 => vec![Release::Pure { epsilon: amount }],
                1 => vec![Release::Zcdp { rho: amount.mul_ratio_floor(1, 10), epsilon: amount, delta: a("1e-7") }],
                2 => vec![Release::Approx { epsilon: amount, delta: a("1e-7") }, Release::Pure { epsilon: amount }],
                _ => {
                    budget = budget + amount;
                    l.set_budget(Budget { epsilon: budget, delta: a("1e-5"), rule: Rule::Basic }, "raise", "p", "dpq.toml").unwrap();
                    continue;
                }
            };
            let mut r = req("0", None);
            r.releases = releases.clone();
            match l.charge(&r) {
                Ok(c) => {
                    charged.extend(releases);
                    if store {
                        l.store_result(c.entry, &serde_json::json!({"x": x}), "alice", serde_json::json!({})).unwrap();
                    }
                }
                Err(LedgerError::Exhausted { .. }) => {}
                Err(e) => prop_assert!(false, "{e}"),
            }
            let s = l.status().unwrap();
            let (be, bd) = accountant::basic(&charged);
            prop_assert_eq!((s.totals.epsilon, s.totals.delta), (be, bd));
            prop_assert!(s.totals.epsilon <= s.budget.epsilon && s.totals.delta <= s.budget.delta);
        }
        let v = l.verify(None).unwrap();
        prop_assert!(v.ok, "{:?}", v);
    }
}
