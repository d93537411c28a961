//! The release protocol, in one place for queries and reports: replay a stored
//! answer, or charge → compute → store → return. Nothing is shown before its
//! charge is committed and its result stored with a hash in the ledger.
//!
//! * A stored answer for the same key is replayed, hash-checked, at no cost.
//! * A charge whose answer was never stored (the process died after charging)
//!   is finished by the analyst's next run with fresh randomness: nothing of
//!   the first attempt was shown, and no seed was ever stored to redraw it
//!   from. Another analyst asking the same pays for a charge of their own.
//! * Two processes finishing the same charge race to store; the ledger keeps
//!   the first, and both show that one.
//! * An error after the charge (infrastructure, memory) leaves the charge in
//!   place and unanswered; running again finishes it.

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
        let (value, result_params) = compute(charge.clone()).await?;
        let stored = ledger.store_result(charge.entry, &value, &request.analyst, result_params)?;
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
        Some(Replay::Unfinished { entry, hash }) => {
            let e = ledger.entries(Some(entry), Some(1))?.pop().ok_or_else(|| super::error::internal(format!("unfinished entry {entry} vanished")))?;
            if e.analyst == request.analyst {
                Charge { entry, hash, epsilon: e.epsilon, delta: e.delta, status: ledger.status()? }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Binding;
    use crate::privacy::accountant::Release;

    fn request(analyst: &str) -> ChargeRequest {
        ChargeRequest {
            kind: "query".into(),
            text: "SELECT 1".into(),
            query_key: Some("k".into()),
            releases: vec![Release::Pure { epsilon: "0.5".parse().unwrap() }],
            params: serde_json::json!({}),
            data_version: "v".into(),
            analyst: analyst.into(),
            quota: Some(("0.5".parse().unwrap(), Amount::ZERO)),
            fresh: false,
        }
    }

    #[test]
    fn only_the_analyst_who_paid_finishes_an_unfinished_charge() {
        let d = tempfile::tempdir().unwrap();
        let binding =
            Binding { tables: vec![], config_budget: ("10".parse().unwrap(), Amount::ZERO), config_file: "dpq.toml".into(), policy: Default::default() };
        let mut l = Ledger::open(&d.path().join("ledger.db"), &binding, "alice").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            // alice's run dies after the charge
            let r = release(&mut l, request("alice"), false, |_| async { Err(super::super::error::internal("crash")) }).await;
            assert!(r.is_err());
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
