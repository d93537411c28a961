//! The release protocol, in one place for queries and reports: replay a stored
//! answer, or charge → compute → store → return. Nothing is shown before its
//! charge is committed and its result stored with a hash in the ledger.
//!
//! * A stored answer for the same key is replayed, hash-checked, at no cost.
//! * A charge whose answer was never stored (the process died after charging)
//!   is finished by the next run with fresh randomness: nothing of the first
//!   attempt was shown, and no seed was ever stored to redraw it from.
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
    let replay = match (&request.query_key, fresh) {
        (Some(key), false) => ledger.replay(key)?,
        _ => None,
    };
    let charge = match replay {
        Some(Replay::Stored(s)) => {
            let status = ledger.status()?;
            let e = ledger.entries(Some(s.charge), Some(1))?.pop();
            let (epsilon, delta) = e.map(|e| (e.epsilon, e.delta)).unwrap_or_default();
            return Ok(Released {
                value: s.result,
                charge: Charge { entry: s.charge, hash: s.charge_hash, epsilon, delta, status: status.clone() },
                result_entry: s.result_entry,
                result_hash: s.result_hash,
                replayed: true,
                status,
            });
        }
        Some(Replay::Unfinished { entry, hash }) => {
            let e = ledger.entries(Some(entry), Some(1))?.pop();
            let (epsilon, delta) = e.map(|e| (e.epsilon, e.delta)).unwrap_or_default();
            Charge { entry, hash, epsilon, delta, status: ledger.status()? }
        }
        None => {
            let c = ledger.charge(&request)?;
            Charge { entry: c.entry, hash: c.hash, epsilon: c.epsilon, delta: c.delta, status: c.status }
        }
    };
    let (value, result_params) = compute(charge.clone()).await?;
    let stored = ledger.store_result(charge.entry, &value, &request.analyst, result_params)?;
    // another process may have finished this charge first: show the stored answer
    Ok(Released { value: stored.result, charge, result_entry: stored.result_entry, result_hash: stored.result_hash, replayed: false, status: ledger.status()? })
}
