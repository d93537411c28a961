//! The budget ledger (`ledger.db`, SQLite in WAL mode, synchronous FULL).
//!
//! * **Charge before release.** [`Ledger::charge`] checks and records a charge in
//!   one `BEGIN IMMEDIATE` transaction, committed durably before any result is
//!   computed or shown. Concurrent processes serialise on the write lock, so they
//!   can never spend more than the budget together.
//! * **Exact.** Amounts are [`Amount`]s (integer 10⁻¹⁸ units), summed exactly.
//!   Admission uses the smallest of basic composition and the zCDP/RDP filters
//!   (valid under adaptive composition: Rogers et al. 2016; Feldman & Zrnic 2021;
//!   Whitehouse et al. 2023); the PLD figure is reported for reference only.
//! * **Tamper-evident.** Entries are append-only; each stores the hash of the
//!   previous entry and a SHA-256 over its own content; the head (count and last
//!   hash) is kept in `meta` in the same transaction. [`Ledger::verify`] recomputes
//!   everything and names the first bad entry.
//! * **Replay.** A charge stores its query key (normalised plan + parameters + data
//!   version) and a secret noise seed. Asking the same thing again returns the
//!   stored answer at no cost; if the process died after charging but before
//!   storing, the answer is recomputed with the same seed — the same numbers.
//! * **Budget changes** in dpq.toml are logged as entries; lowering the total
//!   below what is spent is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Budget;
use crate::privacy::accountant::{self, Release, Totals};
use crate::privacy::amount::Amount;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "budget exhausted: this {what} needs ε={need_eps}{need_delta_txt}, but only ε={rem_eps} (δ={rem_delta}) remains of the dataset's ε={total_eps}, δ={total_delta}\n  hint: lower --epsilon (or the report's total), or raise [budget] in {config} if the data owner agrees"
    )]
    Exhausted {
        what: String,
        need_eps: Amount,
        need_delta_txt: String,
        rem_eps: String,
        rem_delta: Amount,
        total_eps: Amount,
        total_delta: Amount,
        config: String,
    },
    #[error(
        "{config}: [budget] epsilon = {new_eps}, delta = {new_delta} is below what was already spent (ε={spent_eps}, δ={spent_delta})\n  fix: the budget can only stay or grow; set it back to at least the spent amount"
    )]
    BelowSpent { config: String, new_eps: Amount, new_delta: Amount, spent_eps: String, spent_delta: Amount },
    #[error(
        "ledger {path} cannot be opened: {message}\n  hint: if the file was damaged, restore it from a backup; never delete it — it is the record of what was released"
    )]
    Open { path: String, message: String },
    #[error("ledger error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("ledger entry {id} is malformed ({message}); run `dpq budget --verify`")]
    Malformed { id: i64, message: String },
}

/// What a query or report asks to spend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChargeRequest {
    /// "query" or "report".
    pub kind: String,
    /// SQL text or report title.
    pub text: String,
    /// Identity for replay; `None` disables replay.
    pub query_key: Option<String>,
    pub epsilon: Amount,
    pub delta: Amount,
    pub releases: Vec<Release>,
    /// Parameters worth auditing (mechanism, bounds, …), as JSON.
    pub params: serde_json::Value,
    pub data_version: String,
}

/// A committed charge.
#[derive(Debug, Clone, PartialEq)]
pub struct Charged {
    pub entry: i64,
    pub hash: String,
    pub seed: [u8; 32],
    pub remaining_epsilon: f64,
    pub remaining_delta: Amount,
}

/// One ledger entry, as listed by `dpq budget --log`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub time: String,
    pub kind: String,
    pub text: String,
    pub query_key: Option<String>,
    pub epsilon: Amount,
    pub delta: Amount,
    pub releases: Vec<Release>,
    pub params: serde_json::Value,
    pub data_version: Option<String>,
    #[serde(skip)]
    pub seed: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    pub has_result: bool,
}

/// A stored result found for a query key.
#[derive(Debug, Clone)]
pub enum Replay {
    /// The answer that was shown before.
    Stored { entry: i64, result: serde_json::Value },
    /// Charged but never stored (the process died): recompute with this seed.
    Unfinished { entry: i64, seed: [u8; 32] },
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub total_epsilon: Amount,
    pub total_delta: Amount,
    pub spent: Totals,
    pub spent_epsilon: f64,
    pub spent_delta: Amount,
    pub remaining_epsilon: f64,
    pub remaining_delta: Amount,
    pub entries: i64,
    pub head: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: i64,
    pub first_bad: Option<i64>,
    pub problem: Option<String>,
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    config_file: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The hash of an entry: SHA-256 over the previous hash and a canonical
/// serialisation of every field.
fn entry_hash(e: &Entry) -> String {
    let canon = serde_json::json!([
        e.id,
        e.time,
        e.kind,
        e.text,
        e.query_key,
        e.epsilon.to_string(),
        e.delta.to_string(),
        serde_json::to_value(&e.releases).unwrap(),
        e.params,
        e.data_version,
        e.seed,
    ]);
    let mut h = Sha256::new();
    h.update(e.prev_hash.as_bytes());
    h.update(canon.to_string().as_bytes());
    hex::encode(h.finalize())
}

fn result_hash(entry_hash: &str, result: &str) -> String {
    let mut h = Sha256::new();
    h.update(entry_hash.as_bytes());
    h.update(result.as_bytes());
    hex::encode(h.finalize())
}

impl Ledger {
    /// Open (creating if needed) the ledger and log a budget change if dpq.toml's
    /// [budget] differs from the last recorded one.
    pub fn open(path: &Path, budget: &Budget, config_file: &str) -> Result<Ledger, LedgerError> {
        let open_err = |e: rusqlite::Error| LedgerError::Open { path: path.display().to_string(), message: e.to_string() };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(open_err)?;
        if check != "ok" {
            return Err(LedgerError::Open { path: path.display().to_string(), message: format!("integrity check failed: {check}") });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS entries (
                id INTEGER PRIMARY KEY,
                time TEXT NOT NULL,
                kind TEXT NOT NULL,
                text TEXT NOT NULL,
                query_key TEXT,
                epsilon TEXT NOT NULL,
                delta TEXT NOT NULL,
                releases TEXT NOT NULL,
                params TEXT NOT NULL,
                data_version TEXT,
                seed TEXT,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS entries_key ON entries(query_key);
             CREATE TABLE IF NOT EXISTS results (
                entry_id INTEGER PRIMARY KEY,
                result TEXT NOT NULL,
                hash TEXT NOT NULL);",
        )
        .map_err(open_err)?;
        let mut l = Ledger { conn, path: path.to_path_buf(), config_file: config_file.to_string() };
        l.sync_budget(budget)?;
        Ok(l)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn begin(&mut self) -> Result<rusqlite::Transaction<'_>, LedgerError> {
        Ok(self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    fn read_entries(tx: &Connection) -> Result<Vec<Entry>, LedgerError> {
        let mut st = tx.prepare(
            "SELECT e.id, e.time, e.kind, e.text, e.query_key, e.epsilon, e.delta, e.releases, e.params, e.data_version, e.seed, e.prev_hash, e.hash,
                    r.entry_id IS NOT NULL
             FROM entries e LEFT JOIN results r ON r.entry_id = e.id ORDER BY e.id",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, String>(11)?,
                r.get::<_, String>(12)?,
                r.get::<_, bool>(13)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, time, kind, text, query_key, eps, delta, rel, params, dv, seed, prev, hash, has_result) = row?;
            let bad = |m: String| LedgerError::Malformed { id, message: m };
            out.push(Entry {
                id,
                time,
                kind,
                text,
                query_key,
                epsilon: eps.parse().map_err(|e| bad(format!("epsilon: {e}")))?,
                delta: delta.parse().map_err(|e| bad(format!("delta: {e}")))?,
                releases: serde_json::from_str(&rel).map_err(|e| bad(format!("releases: {e}")))?,
                params: serde_json::from_str(&params).map_err(|e| bad(format!("params: {e}")))?,
                data_version: dv,
                seed,
                prev_hash: prev,
                hash,
                has_result,
            });
        }
        Ok(out)
    }

    fn append(tx: &rusqlite::Transaction<'_>, mut e: Entry) -> Result<Entry, LedgerError> {
        let head: Option<(i64, String)> =
            tx.query_row("SELECT id, hash FROM entries ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        let (last_id, prev) = head.unwrap_or((0, GENESIS.to_string()));
        e.id = last_id + 1;
        e.prev_hash = prev;
        e.hash = entry_hash(&e);
        tx.execute(
            "INSERT INTO entries (id, time, kind, text, query_key, epsilon, delta, releases, params, data_version, seed, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                e.id,
                e.time,
                e.kind,
                e.text,
                e.query_key,
                e.epsilon.to_string(),
                e.delta.to_string(),
                serde_json::to_string(&e.releases).unwrap(),
                e.params.to_string(),
                e.data_version,
                e.seed,
                e.prev_hash,
                e.hash
            ],
        )?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('head', ?1)", params![format!("{}:{}", e.id, e.hash)])?;
        Ok(e)
    }

    /// Budget totals as recorded (the latest budget entry).
    fn recorded_budget(entries: &[Entry]) -> Option<(Amount, Amount)> {
        entries.iter().rev().find(|e| e.kind == "budget").map(|e| (e.epsilon, e.delta))
    }

    fn spent(entries: &[Entry], total_delta: Amount) -> (Totals, f64) {
        let releases: Vec<Release> = entries.iter().filter(|e| e.kind != "budget").flat_map(|e| e.releases.iter().cloned()).collect();
        let t = accountant::totals(&releases, total_delta);
        let adm = Self::tight(&t).unwrap_or(f64::INFINITY).min(t.basic_epsilon.to_f64());
        (t, adm)
    }

    /// The zCDP/RDP figure (filters valid under adaptive composition), when one
    /// applies and saves at least 1 % over basic composition (below that, the
    /// exact basic figure is clearer and the gain immaterial).
    fn tight(t: &Totals) -> Option<f64> {
        let basic = t.basic_epsilon.to_f64();
        [t.zcdp_epsilon, t.rdp_epsilon].into_iter().flatten().reduce(f64::min).filter(|v| *v < basic * 0.99)
    }

    fn sync_budget(&mut self, budget: &Budget) -> Result<(), LedgerError> {
        let config = self.config_file.clone();
        let tx = self.begin()?;
        let entries = Self::read_entries(&tx)?;
        let recorded = Self::recorded_budget(&entries);
        if recorded == Some((budget.epsilon, budget.delta)) {
            return Ok(());
        }
        let (t, adm) = Self::spent(&entries, budget.delta);
        if adm > budget.epsilon.to_f64() + 1e-12 || t.basic_delta > budget.delta {
            return Err(LedgerError::BelowSpent {
                config,
                new_eps: budget.epsilon,
                new_delta: budget.delta,
                spent_eps: fmt_eps(adm),
                spent_delta: t.basic_delta,
            });
        }
        let text = match recorded {
            None => format!("budget set to ε={}, δ={}", budget.epsilon, budget.delta),
            Some((e, d)) => format!("budget changed from ε={e}, δ={d} to ε={}, δ={}", budget.epsilon, budget.delta),
        };
        Self::append(
            &tx,
            Entry {
                id: 0,
                time: now(),
                kind: "budget".into(),
                text,
                query_key: None,
                epsilon: budget.epsilon,
                delta: budget.delta,
                releases: vec![],
                params: serde_json::json!({ "source": config }),
                data_version: None,
                seed: None,
                prev_hash: String::new(),
                hash: String::new(),
                has_result: false,
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Check and charge in one transaction. Refuses (and records nothing) when
    /// the charge does not fit.
    pub fn charge(&mut self, req: &ChargeRequest) -> Result<Charged, LedgerError> {
        let config = self.config_file.clone();
        let tx = self.begin()?;
        let entries = Self::read_entries(&tx)?;
        let (total_eps, total_delta) = Self::recorded_budget(&entries).unwrap_or((Amount::ZERO, Amount::ZERO));
        // the releases must not claim more than the charge under basic composition
        let (rb_e, rb_d) = accountant::basic(&req.releases);
        assert!(rb_e <= req.epsilon && rb_d <= req.delta, "releases exceed the charge");
        let mut with_new = entries.clone();
        with_new.push(Entry {
            id: 0,
            time: String::new(),
            kind: req.kind.clone(),
            text: String::new(),
            query_key: None,
            epsilon: req.epsilon,
            delta: req.delta,
            releases: req.releases.clone(),
            params: serde_json::Value::Null,
            data_version: None,
            seed: None,
            prev_hash: String::new(),
            hash: String::new(),
            has_result: false,
        });
        let (t_after, adm_after) = Self::spent(&with_new, total_delta);
        // basic composition alone decides when it fits: exact arithmetic
        let basic_fits = t_after.basic_epsilon <= total_eps;
        let tight_fits = Self::tight(&t_after).is_some_and(|t| t <= total_eps.to_f64() && t < t_after.basic_epsilon.to_f64());
        let fits = (basic_fits || tight_fits) && t_after.basic_delta <= total_delta;
        if !fits {
            let (t_now, adm_now) = Self::spent(&entries, total_delta);
            let rem = (total_eps.to_f64() - adm_now).max(0.0);
            let rem_eps = if t_now.basic_epsilon <= total_eps && adm_now == t_now.basic_epsilon.to_f64() {
                (total_eps - t_now.basic_epsilon).to_string()
            } else {
                fmt_eps(rem)
            };
            return Err(LedgerError::Exhausted {
                what: req.kind.clone(),
                need_eps: req.epsilon,
                need_delta_txt: if req.delta.is_zero() { String::new() } else { format!(", δ={}", req.delta) },
                rem_eps,
                rem_delta: total_delta.saturating_sub(t_now.basic_delta),
                total_eps,
                total_delta,
                config,
            });
        }
        let seed = crate::privacy::samplers::fresh_seed();
        let e = Self::append(
            &tx,
            Entry {
                id: 0,
                time: now(),
                kind: req.kind.clone(),
                text: req.text.clone(),
                query_key: req.query_key.clone(),
                epsilon: req.epsilon,
                delta: req.delta,
                releases: req.releases.clone(),
                params: req.params.clone(),
                data_version: Some(req.data_version.clone()),
                seed: Some(hex::encode(seed)),
                prev_hash: String::new(),
                hash: String::new(),
                has_result: false,
            },
        )?;
        tx.commit()?;
        let remaining_epsilon = if basic_fits && adm_after == t_after.basic_epsilon.to_f64() {
            (total_eps - t_after.basic_epsilon).to_f64()
        } else {
            (total_eps.to_f64() - adm_after).max(0.0)
        };
        Ok(Charged { entry: e.id, hash: e.hash, seed, remaining_epsilon, remaining_delta: total_delta.saturating_sub(t_after.basic_delta) })
    }

    /// Store the released result of a charge (durably) before it is shown.
    pub fn store_result(&mut self, entry: i64, result: &serde_json::Value) -> Result<(), LedgerError> {
        let text = result.to_string();
        let tx = self.begin()?;
        let h: String = tx.query_row("SELECT hash FROM entries WHERE id = ?1", params![entry], |r| r.get(0))?;
        tx.execute("INSERT OR IGNORE INTO results (entry_id, result, hash) VALUES (?1, ?2, ?3)", params![entry, text, result_hash(&h, &text)])?;
        tx.commit()?;
        Ok(())
    }

    /// The stored (or recomputable) answer for a query key, if any.
    pub fn replay(&self, query_key: &str) -> Result<Option<Replay>, LedgerError> {
        let row: Option<(i64, Option<String>, Option<String>)> = self
            .conn
            .query_row(
                "SELECT e.id, e.seed, r.result FROM entries e LEFT JOIN results r ON r.entry_id = e.id
                 WHERE e.query_key = ?1 ORDER BY e.id DESC LIMIT 1",
                params![query_key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            None => None,
            Some((id, _, Some(result))) => {
                Some(Replay::Stored { entry: id, result: serde_json::from_str(&result).map_err(|e| LedgerError::Malformed { id, message: e.to_string() })? })
            }
            Some((id, Some(seed), None)) => {
                let bytes = hex::decode(&seed).map_err(|e| LedgerError::Malformed { id, message: e.to_string() })?;
                let seed: [u8; 32] = bytes.try_into().map_err(|_| LedgerError::Malformed { id, message: "seed length".into() })?;
                Some(Replay::Unfinished { entry: id, seed })
            }
            Some((_, None, None)) => None,
        })
    }

    pub fn entries(&self) -> Result<Vec<Entry>, LedgerError> {
        Self::read_entries(&self.conn)
    }

    pub fn status(&self) -> Result<Status, LedgerError> {
        let entries = self.entries()?;
        let (total_epsilon, total_delta) = Self::recorded_budget(&entries).unwrap_or((Amount::ZERO, Amount::ZERO));
        let (spent, adm) = Self::spent(&entries, total_delta);
        let head = entries.last().map(|e| e.hash.clone()).unwrap_or_else(|| GENESIS.to_string());
        let exact = adm == spent.basic_epsilon.to_f64() && spent.basic_epsilon <= total_epsilon;
        Ok(Status {
            total_epsilon,
            total_delta,
            spent_epsilon: adm,
            spent_delta: spent.basic_delta,
            remaining_epsilon: if exact { (total_epsilon - spent.basic_epsilon).to_f64() } else { (total_epsilon.to_f64() - adm).max(0.0) },
            remaining_delta: total_delta.saturating_sub(spent.basic_delta),
            spent,
            entries: entries.len() as i64,
            head,
        })
    }

    /// Recompute the chain. Reports the first entry that was edited, inserted,
    /// or follows a deleted one; and results whose hash does not match.
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let mut st = self.conn.prepare(
            "SELECT id, time, kind, text, query_key, epsilon, delta, releases, params, data_version, seed, prev_hash, hash FROM entries ORDER BY id",
        )?;
        let rows: Vec<(i64, Result<Entry, String>)> = st
            .query_map([], |r| {
                let id: i64 = r.get(0)?;
                let parse = || -> Result<Entry, String> {
                    Ok(Entry {
                        id,
                        time: r.get(1).map_err(|e| e.to_string())?,
                        kind: r.get(2).map_err(|e| e.to_string())?,
                        text: r.get(3).map_err(|e| e.to_string())?,
                        query_key: r.get(4).map_err(|e| e.to_string())?,
                        epsilon: r.get::<_, String>(5).map_err(|e| e.to_string())?.parse().map_err(|e: crate::privacy::amount::AmountError| e.to_string())?,
                        delta: r.get::<_, String>(6).map_err(|e| e.to_string())?.parse().map_err(|e: crate::privacy::amount::AmountError| e.to_string())?,
                        releases: serde_json::from_str(&r.get::<_, String>(7).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?,
                        params: serde_json::from_str(&r.get::<_, String>(8).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?,
                        data_version: r.get(9).map_err(|e| e.to_string())?,
                        seed: r.get(10).map_err(|e| e.to_string())?,
                        prev_hash: r.get(11).map_err(|e| e.to_string())?,
                        hash: r.get(12).map_err(|e| e.to_string())?,
                        has_result: false,
                    })
                };
                Ok((id, parse()))
            })?
            .collect::<Result<_, _>>()?;
        let bad = |id: i64, n: i64, problem: String| VerifyReport { ok: false, entries: n, first_bad: Some(id), problem: Some(problem) };
        let n = rows.len() as i64;
        let mut prev = GENESIS.to_string();
        let mut expect_id = 1;
        for (id, e) in &rows {
            let e = match e {
                Ok(e) => e,
                Err(m) => return Ok(bad(*id, n, format!("entry {id} cannot be read ({m}): it was edited"))),
            };
            if *id != expect_id {
                let what = if *id > expect_id { format!("entry {expect_id} is missing (deleted)") } else { format!("entry {id} is out of sequence") };
                return Ok(bad(expect_id.min(*id), n, what));
            }
            if e.prev_hash != prev {
                return Ok(bad(*id, n, format!("entry {id} does not follow entry {} (an entry was deleted or inserted before it)", id - 1)));
            }
            if entry_hash(e) != e.hash {
                return Ok(bad(*id, n, format!("entry {id} was edited (its content no longer matches its hash)")));
            }
            prev = e.hash.clone();
            expect_id += 1;
        }
        let head: Option<String> = self.conn.query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| r.get(0)).optional()?;
        let expected_head = if n == 0 { None } else { Some(format!("{}:{}", n, prev)) };
        if head != expected_head {
            let id = head.as_ref().and_then(|h| h.split(':').next()?.parse::<i64>().ok()).unwrap_or(n + 1);
            return Ok(bad(
                id.max(1),
                n,
                format!("the ledger head records entry {} but the chain ends at entry {n}: the last entries were deleted, or the head was edited", id),
            ));
        }
        // results belong to existing entries and match their hashes
        let mut st =
            self.conn.prepare("SELECT r.entry_id, r.result, r.hash, e.hash FROM results r LEFT JOIN entries e ON e.id = r.entry_id ORDER BY r.entry_id")?;
        let res: Vec<(i64, String, String, Option<String>)> =
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
        for (id, result, h, eh) in res {
            match eh {
                None => return Ok(bad(id, n, format!("a stored result refers to entry {id}, which does not exist"))),
                Some(eh) if result_hash(&eh, &result) != h => {
                    return Ok(bad(id, n, format!("the stored result of entry {id} was edited")));
                }
                _ => {}
            }
        }
        Ok(VerifyReport { ok: true, entries: n, first_bad: None, problem: None })
    }
}

pub fn fmt_eps(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    if s.is_empty() { "0".into() } else { s }
}

#[cfg(test)]
mod test;
