//! The release protocol, in one place for queries and reports: replay a stored
//! answer, or charge → compute → store → return. Nothing is shown before its
//! charge is committed and its result stored with a hash in the ledger.
//!
//! * A stored answer for the same key is replayed, hash-checked, at no cost.
//! * A charge whose answer was never stored (the process died after charging)
//!   ends as a recorded failure when its analyst asks again: its noise was
//!   drawn, and the process's time and memory (or a kill at a chosen moment)
//!   could have revealed something of it, so it is never drawn again (the
//!   third attack redrew a count 20 times for one charge by killing the
//!   process). `--fresh` pays for a new attempt. Another analyst asking the
//!   same pays for a charge of their own.
//! * One answer to a key at a time: the whole protocol runs under the key's
//!   lock ([`crate::ledger::KeyLock`]), so a second asker of the same query
//!   (another connection of the gateway, another process) waits and replays
//!   the first one's answer; a charge found unfinished under the lock is one
//!   whose process died. (Without the lock, fifty gateway clients asking the
//!   same query recorded a live computation as failed, and a second charge
//!   of the key was taken for an edited index.)
//! * Two processes finishing the same charge race to store; the ledger keeps
//!   the first, and both show that one.
//! * An error after the charge (infrastructure, memory, a post-processing step
//!   over the noisy values) is the charge's outcome: it is stored and replayed
//!   like an answer, with a message that holds nothing computed from private
//!   rows or noise. Otherwise a query that fails after drawing its noise —
//!   `HAVING CAST(… COUNT(*) …)` that errors on some noisy values — could be
//!   rerun for free until the noise suits the asker (found by the ledger attack).
//!   Only a process that dies leaves a charge unfinished.

use std::future::Future;

use super::error::Result;
use crate::ledger::{ChargeRequest, Ledger, Replay, Status};
use crate::privacy::amount::Amount;

/// The charge a computation runs under.
#[derive(Debug, Clone)]
pub struct Charge {
    pub entry: i64,
    pub hash: String,
    pub epsilon: Amount,
    pub delta: Amount,
    pub status: Status,
}

/// A released answer, as stored.
#[derive(Debug, Clone)]
pub struct Released {
    pub value: serde_json::Value,
    pub charge: Charge,
    #[allow(dead_code)] // the result entry of the answer, for callers that cite it
    pub result_entry: i64,
    pub result_hash: String,
    /// Served from the ledger at no cost.
    pub replayed: bool,
    /// The ledger's status now.
    pub status: Status,
}

/// Replay, or charge and compute. `compute` gets the charge (to state it in
/// the answer) and returns the answer to store and what its result entry
/// records about it (e.g. the bounds actually applied).
pub async fn release<F, Fut>(ledger: &mut Ledger, request: ChargeRequest, fresh: bool, compute: F) -> Result<Released>
where
    F: FnOnce(Charge) -> Fut,
    Fut: Future<Output = Result<(serde_json::Value, serde_json::Value)>>,
{
    let request = ChargeRequest { fresh, ..request };
    // one answer to a key at a time, across processes and connections (see
    // `KeyLock`): held until the result is stored, released on return or death
    let _lock = match &request.query_key {
        Some(key) => {
            let path = ledger.key_lock_path(key);
            Some(
                tokio::task::spawn_blocking(move || crate::ledger::KeyLock::acquire(&path))
                    .await
                    .map_err(|e| super::error::internal(format!("the key lock task failed: {e}")))??,
            )
        }
        None => None,
    };
    // the key may be charged by another process between the replay check and
    // the charge: the ledger then refuses the second charge, and it is replayed
    let mut step = None;
    for _ in 0..3 {
        match answer(ledger, &request, fresh).await {
            Err(super::EngineError::Ledger(crate::ledger::LedgerError::AlreadyCharged { .. })) => continue,
            other => {
                step = Some(other?);
                break;
            }
        }
    }
    match step {
        Some(s) => s.run(ledger, &request, compute).await,
        None => Err(super::error::internal("a query key kept being charged by other processes")),
    }
}

/// The key of a stored failure.
pub const FAILED: &str = "dpq_failed";

/// The recorded outcome of a charge whose process ended before storing its answer.
pub const UNFINISHED: &str = "the process that computed this answer ended before storing it; its noise was drawn, so it is not drawn again";

fn failed_error(entry: i64, stored: &serde_json::Value) -> super::EngineError {
    let message = stored.get(FAILED).and_then(|m| m.as_str()).unwrap_or("(no message)");
    super::EngineError::Failed { entry, message: crate::ledger::printable_lines(message) }
}

/// The first half of the protocol: a replay, or the charge to compute under.
enum Step {
    Replayed(Released),
    Compute(Charge),
}

impl Step {
    async fn run<F, Fut>(self, ledger: &mut Ledger, request: &ChargeRequest, compute: F) -> Result<Released>
    where
        F: FnOnce(Charge) -> Fut,
        Fut: Future<Output = Result<(serde_json::Value, serde_json::Value)>>,
    {
        let charge = match self {
            Step::Replayed(r) => return Ok(r),
            Step::Compute(c) => c,
        };
        let (value, result_params) = match compute(charge.clone()).await {
            Ok(x) => x,
            Err(e) => {
                // the failure is the charge's outcome: noise may have been drawn (and a
                // failing post-processing step can depend on it), so it is stored and
                // replayed like an answer — never redrawn for free
                let e = super::error::after_charge(e);
                let failed = serde_json::json!({ FAILED: e.to_string() });
                let stored = ledger.store_result(charge.entry, &failed, &request.analyst, serde_json::json!({ "failed": true }))?;
                if stored.result.get(FAILED).is_some() {
                    return Err(failed_error(charge.entry, &stored.result));
                }
                // another process stored an answer first: show it
                return Ok(Released {
                    value: stored.result,
                    charge,
                    result_entry: stored.result_entry,
                    result_hash: stored.result_hash,
                    replayed: false,
                    status: ledger.status()?,
                });
            }
        };
        let stored = ledger.store_result(charge.entry, &value, &request.analyst, result_params)?;
        if stored.result.get(FAILED).is_some() {
            return Err(failed_error(charge.entry, &stored.result));
        }
        // another process may have finished this charge first: show the stored answer
        Ok(Released {
            value: stored.result,
            charge,
            result_entry: stored.result_entry,
            result_hash: stored.result_hash,
            replayed: false,
            status: ledger.status()?,
        })
    }
}

async fn answer(ledger: &mut Ledger, request: &ChargeRequest, fresh: bool) -> Result<Step> {
    let replay = match (&request.query_key, fresh) {
        (Some(key), false) => ledger.replay(key)?,
        _ => None,
    };
    let charge = match replay {
        Some(Replay::Stored(s)) if s.result.get(FAILED).is_some() => {
            return Err(failed_error(s.charge, &s.result));
        }
        Some(Replay::Stored(s)) => {
            let status = ledger.status()?;
            let e = ledger.entries(Some(s.charge), Some(1))?.pop();
            let (epsilon, delta) = e.map(|e| (e.epsilon, e.delta)).unwrap_or_default();
            return Ok(Step::Replayed(Released {
                value: s.result,
                charge: Charge { entry: s.charge, hash: s.charge_hash, epsilon, delta, status: status.clone() },
                result_entry: s.result_entry,
                result_hash: s.result_hash,
                replayed: true,
                status,
            }));
        }
        Some(Replay::Unfinished { entry, hash: _ }) => {
            let e = ledger.entries(Some(entry), Some(1))?.pop().ok_or_else(|| super::error::internal(format!("unfinished entry {entry} vanished")))?;
            if e.analyst == request.analyst {
                // the process that computed this charge ended before storing its
                // answer. Its noise was drawn and may have been observed (time,
                // memory, a kill at a chosen moment), so it is never drawn again:
                // the charge ends as a recorded failure
                let failed = serde_json::json!({ FAILED: UNFINISHED });
                let stored = ledger.store_result(entry, &failed, &request.analyst, serde_json::json!({ "failed": true, "unfinished": true }))?;
                return Err(failed_error(entry, &stored.result));
            } else {
                // only the analyst who paid may finish a charge: anyone else
                // pays for their own (their quota is checked like any charge)
                let c = ledger.charge(&ChargeRequest { fresh: true, ..request.clone() })?;
                Charge { entry: c.entry, hash: c.hash, epsilon: c.epsilon, delta: c.delta, status: c.status }
            }
        }
        None => {
            let c = ledger.charge(request)?;
            Charge { entry: c.entry, hash: c.hash, epsilon: c.epsilon, delta: c.delta, status: c.status }
        }
    };
    Ok(Step::Compute(charge))
}

/// A charge request for the tests below.
#[cfg(test)]
fn test_request(analyst: &str, epsilon: &str, quota: Option<(Amount, Amount)>) -> ChargeRequest {
    ChargeRequest {
        kind: "query".into(),
        text: "q".into(),
        query_key: Some("k".into()),
        releases: vec![crate::privacy::accountant::Release::Pure { epsilon: epsilon.parse().unwrap() }],
        params: serde_json::json!({}),
        data_version: "v".into(),
        analyst: analyst.into(),
        quota,
        fresh: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Binding;

    fn request(analyst: &str) -> ChargeRequest {
        test_request(analyst, "0.5", Some(("0.5".parse().unwrap(), Amount::ZERO)))
    }

    #[test]
    fn only_the_analyst_who_paid_finishes_an_unfinished_charge() {
        let d = tempfile::tempdir().unwrap();
        let binding =
            Binding { tables: vec![], config_budget: ("10".parse().unwrap(), Amount::ZERO), config_file: "dpq.toml".into(), policy: Default::default() };
        let mut l = Ledger::open(&d.path().join("ledger.db"), &binding, "alice").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            // alice's process dies after the charge (before computing)
            l.charge(&request("alice")).unwrap();
            let first = l.status().unwrap().entries;
            // bob asking the same pays for his own charge (and his quota is checked)
            let bob =
                release(&mut l, request("bob"), false, |c| async move { Ok((serde_json::json!({ "entry": c.entry }), serde_json::json!({}))) }).await.unwrap();
            assert!(!bob.replayed);
            assert!(bob.charge.entry > first, "bob's answer is under a charge of his own");
            let by: std::collections::BTreeMap<String, _> = l.by_analyst().unwrap().into_iter().collect();
            assert_eq!(by["bob"].epsilon, "0.5".parse().unwrap());
            // bob's quota is now used: asking again with --fresh is refused
            let again = release(&mut l, request("bob"), true, |_| async { Ok((serde_json::json!({}), serde_json::json!({}))) }).await;
            assert!(again.is_err(), "bob's quota is enforced");
        });
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;
    use crate::ledger::Binding;

    /// A computation that fails after its charge leaves a recorded failure:
    /// asking again replays it (no new noise, no new charge); only --fresh
    /// pays for another attempt. The message keeps nothing of the engine's text.
    #[test]
    fn a_failure_after_the_charge_is_the_recorded_outcome() {
        let d = tempfile::tempdir().unwrap();
        let binding =
            Binding { tables: vec![], config_budget: ("10".parse().unwrap(), Amount::ZERO), config_file: "dpq.toml".into(), policy: Default::default() };
        let mut l = Ledger::open(&d.path().join("ledger.db"), &binding, "alice").unwrap();
        let req = || test_request("alice", "0.1", None);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let leak =
                || async { Err::<(serde_json::Value, serde_json::Value), _>(super::super::EngineError::Sql("Cannot cast string 'x31' to Int64".into())) };
            let e = release(&mut l, req(), false, |_| leak()).await.unwrap_err();
            assert!(matches!(e, super::super::EngineError::Failed { .. }), "{e}");
            assert!(!e.to_string().contains("x31"), "the engine's text (a noisy value) is withheld: {e}");
            let spent = l.status().unwrap().totals.epsilon;
            let mut computed = false;
            let again = release(&mut l, req(), false, |_| {
                computed = true;
                async { Ok((serde_json::json!({"n": 1}), serde_json::json!({}))) }
            })
            .await
            .unwrap_err();
            assert!(matches!(again, super::super::EngineError::Failed { .. }));
            assert!(!computed, "the failure is replayed, not recomputed");
            assert_eq!(l.status().unwrap().totals.epsilon, spent, "and not charged again");
            let fresh = release(&mut l, req(), true, |_| async { Ok((serde_json::json!({"n": 2}), serde_json::json!({}))) }).await.unwrap();
            assert_eq!(fresh.value, serde_json::json!({"n": 2}));
            assert!(l.status().unwrap().totals.epsilon > spent, "--fresh pays");
            assert!(l.verify(None).unwrap().ok);
        });
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;
    use crate::ledger::Binding;

    fn req(analyst: &str) -> ChargeRequest {
        test_request(analyst, "0.1", None)
    }

    /// Several askers of one query at once, through separate ledger handles (as
    /// gateway connections and processes have): the first computes under one
    /// charge, every other one waits and replays its answer. Found by the
    /// gateway's load test: without the key lock, a second asker took the live
    /// computation for a dead one's — recording it as failed (same analyst) or
    /// charging again (another analyst), after which storing the first answer
    /// failed as "replay key index edited".
    #[test]
    fn concurrent_askers_of_one_query_share_one_charge() {
        for other in ["alice", "bob"] {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("ledger.db");
            let binding =
                Binding { tables: vec![], config_budget: ("10".parse().unwrap(), Amount::ZERO), config_file: "dpq.toml".into(), policy: Default::default() };
            drop(Ledger::open(&path, &binding, "alice").unwrap());
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
            let computed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let answers = rt.block_on(async {
                let mut tasks = Vec::new();
                for i in 0..6 {
                    let (path, binding, computed) = (path.clone(), binding.clone(), computed.clone());
                    let who = if i == 0 { "alice" } else { other };
                    tasks.push(tokio::spawn(async move {
                        // the first asker starts first and computes slowly
                        tokio::time::sleep(std::time::Duration::from_millis(if i == 0 { 0 } else { 50 })).await;
                        let mut l = Ledger::open(&path, &binding, who).unwrap();
                        release(&mut l, req(who), false, |c| async move {
                            computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                            Ok((serde_json::json!({ "entry": c.entry }), serde_json::json!({})))
                        })
                        .await
                    }));
                }
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap());
                }
                out
            });
            let answers: Vec<Released> = answers.into_iter().map(|a| a.unwrap_or_else(|e| panic!("every asker is answered ({other}): {e}"))).collect();
            assert_eq!(computed.load(std::sync::atomic::Ordering::SeqCst), 1, "one computation ({other})");
            assert!(answers.iter().all(|a| a.value == answers[0].value), "one answer ({other})");
            assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1, "the others replay it ({other})");
            let l = Ledger::open(&path, &binding, "alice").unwrap();
            assert_eq!(l.status().unwrap().totals.charges, 1, "one charge ({other})");
            assert!(l.verify(None).unwrap().ok, "the ledger verifies ({other})");
        }
    }
}
