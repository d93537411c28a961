//! The budget ledger (`ledger.db`, SQLite in WAL mode, synchronous FULL): a
//! hash-chained, append-only record of every budget, charge and released
//! result of one dataset. docs/ledger.md states its guarantees and threat model.
//!
//! * **Bound to its dataset.** The first entry (genesis) holds the dataset's id;
//!   every ingest records that id in the table's manifest. A dataset that holds
//!   data refuses to run without its own ledger: a missing, empty or foreign
//!   `ledger.db` admits nothing ([`Ledger::open`]).
//! * **Charge before release, exactly.** [`Ledger::charge`] checks and records
//!   a charge in one `BEGIN IMMEDIATE` transaction (and under the writers' lock
//!   file), committed durably before anything is computed or shown. Amounts are
//!   exact; every entry carries the running totals, so admission and status
//!   read one entry: a call costs the same at 10 entries and at 100 000.
//!   Admission is by the dataset's filter (`privacy::accountant::filter`).
//! * **No secret.** No noise seed is stored: a charged query draws fresh
//!   randomness in memory. The result is stored with a `result` entry whose hash
//!   covers it, in one transaction; a charge whose result never arrived (the
//!   process died) is finished by the next run of the same query with new
//!   randomness — nothing of the first attempt was ever shown.
//! * **Fail closed.** Charging and replaying verify the chain incrementally
//!   (from the last verified head) and check it against `ledger.anchor`; a ledger
//!   that fails admits no charge and serves no replay. A replayed result is
//!   checked against its hash before it is served.
//! * **Who and why.** Every entry names its analyst; budget changes go through
//!   [`Ledger::set_budget`] with a reason. A hand edit of `[budget]` in dpq.toml
//!   is refused with the command to use.

pub mod anchor;
pub mod statement;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::privacy::accountant::filter::{Budget, Governing, Rule, Totals};
use crate::privacy::accountant::{self, Release};
use crate::privacy::amount::Amount;
use anchor::{Anchor, Head};

/// The ledger format this dpq writes.
pub const FORMAT: &str = "2";
const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "budget exhausted: this {what} needs {need}, but only {remaining} remains of the dataset's {total} ({rule})\n  hint: lower --epsilon (or the report's total), or ask the data owner to raise the budget: dpq budget set --epsilon E --reason \"…\""
    )]
    Exhausted { what: String, need: String, remaining: String, total: String, rule: Rule },
    #[error(
        "analyst `{analyst}` has used their quota: this {what} needs ε={need}, and {remaining} of their quota ε={quota} remains\n  hint: the privacy officer can raise it in analysts.toml"
    )]
    Quota { analyst: String, what: String, need: Amount, remaining: Amount, quota: Amount },
    #[error(
        "the new budget (ε={new_eps}, δ={new_delta}) is below what was already spent (ε={spent_eps}, δ={spent_delta} by {rule})\n  fix: a budget can only stay or grow past what is spent; nothing was changed"
    )]
    BelowSpent { new_eps: Amount, new_delta: Amount, spent_eps: Amount, spent_delta: Amount, rule: Rule },
    #[error(
        "{path} is missing, but this dataset holds data (tables: {tables})\n  the ledger is the only record of what was released; without it dpq cannot know what is left of the budget\n  fix: restore ledger.db and ledger.anchor from a backup (never recreate them)"
    )]
    Missing { path: String, tables: String },
    #[error(
        "{path} belongs to another dataset (its id is {ledger}, the data here was ingested under {dataset})\n  fix: restore this dataset's own ledger.db from a backup"
    )]
    Foreign { path: String, ledger: String, dataset: String },
    #[error(
        "{path} was written by an older dpq (ledger format {found}, which stored noise seeds); this dpq writes format {FORMAT}\n  fix: keep the old file for the record (it holds secrets: restrict who can read it), and start a new dataset directory with `dpq init`"
    )]
    OldFormat { path: String, found: String },
    #[error(
        "the ledger failed verification: {problem}\n  dpq admits no charge and serves no replay from a ledger that does not verify\n  fix: run `dpq budget --verify` for details, and restore ledger.db and ledger.anchor from a backup"
    )]
    Broken { problem: String },
    #[error(
        "{config}: [budget] says ε={config_eps}, δ={config_delta}, but the ledger's budget is ε={ledger_eps}, δ={ledger_delta}: budgets are changed through the ledger, not by editing dpq.toml\n  fix: run `dpq budget set --epsilon {config_eps} --delta {config_delta} --reason \"…\"` (it records who and why, and updates dpq.toml), or restore [budget] in dpq.toml"
    )]
    ConfigDrift { config: String, config_eps: Amount, config_delta: Amount, ledger_eps: Amount, ledger_delta: Amount },
    #[error(
        "ledger {path} cannot be opened: {message}\n  hint: if the file was damaged, restore it from a backup; never delete it — it is the record of what was released"
    )]
    Open { path: String, message: String },
    #[error("ledger error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("ledger entry {id} is malformed ({message}); run `dpq budget --verify`")]
    Malformed { id: i64, message: String },
    #[error("cannot write {path}: {message}")]
    Io { path: String, message: String },
}

type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// What a query or report asks to spend: its releases, from which the charge is derived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChargeRequest {
    /// "query" or "report".
    pub kind: String,
    /// SQL text or report title.
    pub text: String,
    /// Identity for replay; `None` disables replay.
    pub query_key: Option<String>,
    pub releases: Vec<Release>,
    /// Parameters worth auditing (mechanism, bounds, …), as JSON.
    pub params: serde_json::Value,
    pub data_version: String,
    /// Who asks.
    pub analyst: String,
    /// The analyst's quota (ε, δ under basic composition), if they have one.
    pub quota: Option<(Amount, Amount)>,
}

/// One ledger entry: everything in it is covered by its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub time: String,
    /// "genesis", "budget", a charge ("query" or "report"), or "result".
    pub kind: String,
    pub analyst: String,
    pub text: String,
    #[serde(default)]
    pub query_key: Option<String>,
    /// The charge under basic composition (0 for other kinds).
    pub epsilon: Amount,
    pub delta: Amount,
    #[serde(default)]
    pub releases: Vec<Release>,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default)]
    pub data_version: Option<String>,
    /// A result entry: the charge it finishes, and the SHA-256 of the stored result.
    #[serde(default)]
    pub charge_id: Option<i64>,
    #[serde(default)]
    pub result_hash: Option<String>,
    /// The budget in force and the running totals after this entry.
    pub budget: Budget,
    pub totals: Totals,
    /// This analyst's running totals after this entry (charges only).
    #[serde(default)]
    pub analyst_totals: Option<Totals>,
    pub prev_hash: String,
    #[serde(skip)]
    pub hash: String,
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

impl Entry {
    /// The canonical body (what the hash covers, with the previous hash).
    fn body(&self) -> String {
        serde_json::to_string(self).expect("entry serialises")
    }
    fn compute_hash(body: &str, prev: &str) -> String {
        sha256_hex(&[prev.as_bytes(), b"\n", body.as_bytes()])
    }
}

/// SHA-256 of a stored result's text.
pub fn result_hash(text: &str) -> String {
    sha256_hex(&[text.as_bytes()])
}

/// A committed charge.
#[derive(Debug, Clone)]
pub struct Charged {
    pub entry: i64,
    pub hash: String,
    pub epsilon: Amount,
    pub delta: Amount,
    pub status: Status,
}

/// A stored result, as it is (and will be) served.
#[derive(Debug, Clone)]
pub struct Stored {
    pub charge: i64,
    pub charge_hash: String,
    pub result_entry: i64,
    pub result_hash: String,
    pub result: serde_json::Value,
}

/// What a query key finds in the ledger.
#[derive(Debug, Clone)]
pub enum Replay {
    /// The answer that was shown before (hash-checked).
    Stored(Stored),
    /// Charged but never answered (the process died): finish it with new randomness.
    Unfinished { entry: i64, hash: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub dataset: String,
    pub budget: Budget,
    pub totals: Totals,
    /// The figure that governs admission.
    pub governing: Governing,
    /// ε spent stated under the governing rule.
    pub epsilon_spent: Amount,
    pub entries: i64,
    pub head: Head,
    /// dpq.toml's [budget] differs from the ledger's (charging is refused).
    pub config_drift: Option<String>,
}

impl Status {
    /// ε remaining under the governing rule (basic: exact; zcdp: the budget's ε
    /// less the conversion of what is spent).
    pub fn remaining_epsilon(&self) -> Amount {
        self.budget.epsilon.saturating_sub(self.epsilon_spent)
    }
    pub fn remaining_delta(&self) -> Amount {
        match self.budget.rule {
            Rule::Basic => self.budget.delta.saturating_sub(self.totals.delta),
            Rule::Zcdp => self.governing.delta_remaining,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: i64,
    pub first_bad: Option<i64>,
    pub problem: Option<String>,
    /// Charges without a result (interrupted runs; the next run finishes them).
    pub unfinished: Vec<i64>,
    pub head: Option<Head>,
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    dataset: String,
    config_drift: Option<LedgerError>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS entries (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        analyst TEXT NOT NULL,
        query_key TEXT,
        charge_id INTEGER,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS entries_key ON entries(query_key);
     CREATE INDEX IF NOT EXISTS entries_charge ON entries(charge_id);
     CREATE INDEX IF NOT EXISTS entries_analyst ON entries(analyst, id);
     CREATE TABLE IF NOT EXISTS results (charge_id INTEGER PRIMARY KEY, result TEXT NOT NULL);";

/// The dataset facts the ledger is checked against.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Tables holding data, with the dataset id their manifests record (if any).
    pub tables: Vec<(String, Option<String>)>,
    /// dpq.toml's [budget] (used once, to create the ledger) and the file's name.
    pub config_budget: (Amount, Amount),
    pub config_file: String,
}

impl Ledger {
    /// Open the ledger of a dataset, creating it (with its genesis entry) only
    /// when the dataset holds no data yet.
    pub fn open(path: &Path, binding: &Binding, analyst: &str) -> Result<Ledger> {
        let empty = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
        if empty {
            if !binding.tables.is_empty() {
                return Err(LedgerError::Missing {
                    path: path.display().to_string(),
                    tables: binding.tables.iter().map(|t| t.0.clone()).collect::<Vec<_>>().join(", "),
                });
            }
            let _ = std::fs::remove_file(path);
            Ledger::create(path, binding, analyst)?;
        }
        let conn = Ledger::connect(path)?;
        let format: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| r.get(0)).optional().unwrap_or(None);
        match format.as_deref() {
            Some(FORMAT) => {}
            Some(other) => return Err(LedgerError::OldFormat { path: path.display().to_string(), found: other.into() }),
            None => {
                let old: bool = conn.query_row("SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'entries'", [], |r| r.get(0)).unwrap_or(false);
                if old {
                    return Err(LedgerError::OldFormat { path: path.display().to_string(), found: "1".into() });
                }
                return Err(LedgerError::Broken { problem: format!("{} has no ledger in it (no format record)", path.display()) });
            }
        }
        let dataset: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'dataset'", [], |r| r.get(0))
            .optional()?
            .ok_or_else(|| LedgerError::Broken { problem: "the ledger records no dataset id".into() })?;
        for (table, id) in &binding.tables {
            if let Some(id) = id {
                if id != &dataset {
                    let _ = table;
                    return Err(LedgerError::Foreign { path: path.display().to_string(), ledger: dataset, dataset: id.clone() });
                }
            }
        }
        let mut l = Ledger { conn, path: path.to_path_buf(), dataset, config_drift: None };
        // a hand edit of [budget] is refused for charges (read-only commands still work)
        let head = l.head_entry()?;
        if let Some(h) = head {
            let (ce, cd) = binding.config_budget;
            if (ce, cd) != (h.budget.epsilon, h.budget.delta) {
                l.config_drift = Some(LedgerError::ConfigDrift {
                    config: binding.config_file.clone(),
                    config_eps: ce,
                    config_delta: cd,
                    ledger_eps: h.budget.epsilon,
                    ledger_delta: h.budget.delta,
                });
            }
        }
        Ok(l)
    }

    fn connect(path: &Path) -> Result<Connection> {
        let open_err = |e: rusqlite::Error| LedgerError::Open { path: path.display().to_string(), message: e.to_string() };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        // (SQLite's own integrity check reads the whole file: `verify` runs it, not every open)
        Ok(conn)
    }

    /// A new ledger with its genesis entry (a new dataset id and the configured budget).
    fn create(path: &Path, binding: &Binding, analyst: &str) -> Result<()> {
        let _lock = anchor::lock(path).map_err(|e| LedgerError::Io { path: path.display().to_string(), message: e.to_string() })?;
        if std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false) {
            return Ok(()); // another process created it meanwhile
        }
        let mut conn = Ledger::connect(path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        let mut id_bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut crate::privacy::samplers::os_rng(), &mut id_bytes);
        let dataset = hex::encode(id_bytes);
        tx.execute("INSERT INTO meta (key, value) VALUES ('format', ?1), ('dataset', ?2)", params![FORMAT, dataset])?;
        let budget = Budget { epsilon: binding.config_budget.0, delta: binding.config_budget.1, rule: Rule::Basic };
        let genesis = Entry {
            id: 1,
            time: now(),
            kind: "genesis".into(),
            analyst: analyst.into(),
            text: format!("ledger of dataset {dataset} created with budget ε={}, δ={} ({})", budget.epsilon, budget.delta, budget.rule),
            query_key: None,
            epsilon: Amount::ZERO,
            delta: Amount::ZERO,
            releases: vec![],
            params: serde_json::json!({ "dataset": dataset, "format": FORMAT, "source": binding.config_file }),
            data_version: None,
            charge_id: None,
            result_hash: None,
            budget,
            totals: Totals::default(),
            analyst_totals: None,
            prev_hash: GENESIS_PREV.into(),
            hash: String::new(),
        };
        let head = insert(&tx, genesis)?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('verified', ?1)", params![head.to_string()])?;
        let a = Anchor { format: anchor::FORMAT.into(), dataset: dataset.clone(), committed: head.clone(), pending: Some(head.clone()) };
        anchor::write(path, &a).map_err(|e| LedgerError::Io { path: anchor::path(path).display().to_string(), message: e.to_string() })?;
        tx.commit()?;
        anchor::write(path, &Anchor { pending: None, ..a })
            .map_err(|e| LedgerError::Io { path: anchor::path(path).display().to_string(), message: e.to_string() })?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    fn head_entry_in(conn: &Connection) -> Result<Option<Entry>> {
        let row: Option<(i64, String, String, String)> = conn
            .query_row("SELECT id, body, prev_hash, hash FROM entries ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        row.map(|(id, body, prev, hash)| parse_entry(id, &body, &prev, &hash)).transpose()
    }

    fn head_entry(&self) -> Result<Option<Entry>> {
        Ledger::head_entry_in(&self.conn)
    }

    /// Check the chain from the last verified head to the current one, and the
    /// head against the anchor. Cheap: only the entries since the last check.
    fn check(conn: &Connection, path: &Path) -> Result<Entry> {
        let head = Ledger::head_entry_in(conn)?.ok_or_else(|| LedgerError::Broken { problem: "the ledger has no entries (no genesis)".into() })?;
        let h = Head { entries: head.id, hash: head.hash.clone() };
        if head.id != count(conn)? {
            return Err(LedgerError::Broken { problem: format!("the chain has gaps: its last entry is {} but it holds {} entries", head.id, count(conn)?) });
        }
        match anchor::read(path).map_err(|problem| LedgerError::Broken { problem })? {
            None => return Err(LedgerError::Broken { problem: format!("{} is missing (the head is anchored there)", anchor::path(path).display()) }),
            Some(a) => {
                if a.committed != h && a.pending.as_ref() != Some(&h) {
                    return Err(LedgerError::Broken {
                        problem: format!(
                            "the chain ends at entry {} but ledger.anchor records {}: entries were deleted, added or rewritten outside dpq",
                            h.entries, a.committed
                        ),
                    });
                }
            }
        }
        let verified: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'verified'", [], |r| r.get(0)).optional()?;
        let from: Head = verified.and_then(|v| v.parse().ok()).unwrap_or(Head { entries: 0, hash: GENESIS_PREV.into() });
        if from.entries > h.entries {
            return Err(LedgerError::Broken { problem: format!("the ledger was verified up to entry {} but now ends at {}", from.entries, h.entries) });
        }
        let mut prev = Ledger::entry_at(conn, from.entries)?;
        if let Some(p) = &prev {
            if p.hash != from.hash {
                return Err(LedgerError::Broken { problem: format!("entry {} changed after it was verified", from.entries) });
            }
        }
        let mut st = conn.prepare("SELECT id, kind, analyst, query_key, charge_id, body, prev_hash, hash FROM entries WHERE id > ?1 ORDER BY id")?;
        let rows = st.query_map(params![from.entries], row_tuple)?;
        for row in rows {
            let e = check_row(row?, prev.as_ref())?;
            prev = Some(e);
        }
        Ok(head)
    }

    fn entry_at(conn: &Connection, id: i64) -> Result<Option<Entry>> {
        if id == 0 {
            return Ok(None);
        }
        let row = conn
            .query_row("SELECT id, kind, analyst, query_key, charge_id, body, prev_hash, hash FROM entries WHERE id = ?1", params![id], row_tuple)
            .optional()?;
        match row {
            Some(r) => Ok(Some(parse_entry(r.0, &r.5, &r.6, &r.7)?)),
            None => Err(LedgerError::Broken { problem: format!("entry {id} is missing") }),
        }
    }

    /// Append entries built from the current head, atomically, under the writers'
    /// lock; the anchor records the new head. `f` sees the verified head.
    fn append<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction<'_>, &Entry) -> Result<(Vec<Entry>, T)>) -> Result<T> {
        let io = |p: &Path, e: std::io::Error| LedgerError::Io { path: p.display().to_string(), message: e.to_string() };
        let _lock = anchor::lock(&self.path).map_err(|e| io(&self.path, e))?;
        let path = self.path.clone();
        let dataset = self.dataset.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = Ledger::check(&tx, &path)?;
        let old = Head { entries: head.id, hash: head.hash.clone() };
        let (new, out) = f(&tx, &head)?;
        if new.is_empty() {
            return Ok(out);
        }
        let mut last = old.clone();
        let mut prev_hash = head.hash.clone();
        for (i, mut e) in new.into_iter().enumerate() {
            e.id = head.id + 1 + i as i64;
            e.prev_hash = prev_hash.clone();
            last = insert(&tx, e)?;
            prev_hash = last.hash.clone();
        }
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('verified', ?1)", params![last.to_string()])?;
        let a = Anchor { format: anchor::FORMAT.into(), dataset, committed: old, pending: Some(last.clone()) };
        anchor::write(&path, &a).map_err(|e| io(&anchor::path(&path), e))?;
        tx.commit()?;
        anchor::write(&path, &Anchor { committed: last, pending: None, ..a }).map_err(|e| io(&anchor::path(&path), e))?;
        Ok(out)
    }

    /// The status: one entry read (constant cost).
    pub fn status(&self) -> Result<Status> {
        let head = self.head_entry()?.ok_or_else(|| LedgerError::Broken { problem: "the ledger has no entries (no genesis)".into() })?;
        Ok(self.status_of(&head))
    }

    fn status_of(&self, head: &Entry) -> Status {
        Status {
            dataset: self.dataset.clone(),
            budget: head.budget,
            totals: head.totals,
            governing: head.budget.spent(&head.totals),
            epsilon_spent: head.budget.epsilon_spent(&head.totals),
            entries: head.id,
            head: Head { entries: head.id, hash: head.hash.clone() },
            config_drift: self.config_drift.as_ref().map(|e| e.to_string()),
        }
    }

    /// Check and charge in one transaction. Refuses (and records nothing) when
    /// the charge does not fit the dataset's budget or the analyst's quota.
    pub fn charge(&mut self, req: &ChargeRequest) -> Result<Charged> {
        if let Some(e) = self.config_drift.take() {
            let msg = e.to_string();
            self.config_drift = Some(e);
            return Err(LedgerError::Broken { problem: msg });
        }
        let (epsilon, delta) = accountant::basic(&req.releases);
        let out = self.append(|tx, head| {
            let after = head.totals.with(&req.releases);
            if !head.budget.admits(&after) {
                let g = head.budget.spent(&head.totals);
                let need = match head.budget.rule {
                    Rule::Basic => format!("ε={epsilon}{}", if delta.is_zero() { String::new() } else { format!(", δ={delta}") }),
                    Rule::Zcdp => format!("ρ={}", Totals::default().with(&req.releases).rho),
                };
                return Err(LedgerError::Exhausted {
                    what: req.kind.clone(),
                    need,
                    remaining: format!("{}={} (δ={})", g.unit, g.remaining, g.delta_remaining),
                    total: format!("{}={} (ε={}, δ={})", g.unit, g.total, head.budget.epsilon, head.budget.delta),
                    rule: head.budget.rule,
                });
            }
            let mine: Option<Entry> = tx
                .query_row(
                    "SELECT id, body, prev_hash, hash FROM entries WHERE analyst = ?1 AND kind IN ('query', 'report') ORDER BY id DESC LIMIT 1",
                    params![req.analyst],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)),
                )
                .optional()?
                .map(|(id, b, p, h)| parse_entry(id, &b, &p, &h))
                .transpose()?;
            let analyst_after = mine.and_then(|e| e.analyst_totals).unwrap_or_default().with(&req.releases);
            if let Some((qe, qd)) = req.quota {
                if analyst_after.epsilon > qe || analyst_after.delta > qd {
                    let used = analyst_after.epsilon.saturating_sub(epsilon);
                    return Err(LedgerError::Quota {
                        analyst: req.analyst.clone(),
                        what: req.kind.clone(),
                        need: epsilon,
                        remaining: qe.saturating_sub(used),
                        quota: qe,
                    });
                }
            }
            let e = Entry {
                id: 0,
                time: now(),
                kind: req.kind.clone(),
                analyst: req.analyst.clone(),
                text: req.text.clone(),
                query_key: req.query_key.clone(),
                epsilon,
                delta,
                releases: req.releases.clone(),
                params: req.params.clone(),
                data_version: Some(req.data_version.clone()),
                charge_id: None,
                result_hash: None,
                budget: head.budget,
                totals: after,
                analyst_totals: Some(analyst_after),
                prev_hash: String::new(),
                hash: String::new(),
            };
            Ok((vec![e], ()))
        })?;
        let _ = out;
        // the charge is the entry just appended: the head
        let head = self.head_entry()?.expect("just appended");
        Ok(Charged { entry: head.id, hash: head.hash.clone(), epsilon, delta, status: self.status_of(&head) })
    }

    fn entry_with_hash(conn: &Connection, id: i64) -> Result<Entry> {
        Ledger::entry_at(conn, id)?.ok_or_else(|| LedgerError::Broken { problem: format!("entry {id} is missing") })
    }

    /// Store the released result of a charge, with a `result` entry covering
    /// its hash, in one transaction — before it is shown. If the charge already
    /// has a result (another process finished it first), that one is returned
    /// and nothing is stored: only one answer is ever shown per charge.
    pub fn store_result(&mut self, charge: i64, result: &serde_json::Value, analyst: &str, params: serde_json::Value) -> Result<Stored> {
        let text = result.to_string();
        let hash = result_hash(&text);
        self.append(|tx, head| {
            let c = Ledger::entry_with_hash(tx, charge)?;
            if !is_charge(&c.kind) {
                return Err(LedgerError::Broken { problem: format!("entry {charge} is not a charge") });
            }
            if let Some(existing) = Ledger::result_of(tx, &c)? {
                return Ok((vec![], existing));
            }
            tx.execute("INSERT INTO results (charge_id, result) VALUES (?1, ?2)", params![charge, text])?;
            let e = Entry {
                id: 0,
                time: now(),
                kind: "result".into(),
                analyst: analyst.into(),
                text: format!("result of entry {charge}"),
                query_key: None,
                epsilon: Amount::ZERO,
                delta: Amount::ZERO,
                releases: vec![],
                params,
                data_version: None,
                charge_id: Some(charge),
                result_hash: Some(hash.clone()),
                budget: head.budget,
                totals: head.totals,
                analyst_totals: None,
                prev_hash: String::new(),
                hash: String::new(),
            };
            let stored = Stored { charge, charge_hash: c.hash.clone(), result_entry: head.id + 1, result_hash: hash.clone(), result: result.clone() };
            Ok((vec![e], stored))
        })
    }

    /// The verified stored result of a charge, if it has one.
    fn result_of(conn: &Connection, charge: &Entry) -> Result<Option<Stored>> {
        let row: Option<(i64, String, String, String)> = conn
            .query_row("SELECT id, body, prev_hash, hash FROM entries WHERE charge_id = ?1 AND kind = 'result' ORDER BY id LIMIT 1", params![charge.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((rid, body, prev, hash)) = row else { return Ok(None) };
        let re = parse_entry(rid, &body, &prev, &hash)?;
        let text: Option<String> = conn.query_row("SELECT result FROM results WHERE charge_id = ?1", params![charge.id], |r| r.get(0)).optional()?;
        let text =
            text.ok_or_else(|| LedgerError::Broken { problem: format!("the stored result of entry {} was deleted (entry {rid} records it)", charge.id) })?;
        let want = re.result_hash.clone().unwrap_or_default();
        if result_hash(&text) != want {
            return Err(LedgerError::Broken {
                problem: format!("the stored result of entry {} was edited (it no longer matches the hash in entry {rid})", charge.id),
            });
        }
        let result = serde_json::from_str(&text).map_err(|e| LedgerError::Malformed { id: rid, message: e.to_string() })?;
        Ok(Some(Stored { charge: charge.id, charge_hash: charge.hash.clone(), result_entry: rid, result_hash: want, result }))
    }

    /// The stored answer for a query key, verified; or a charge still to finish.
    pub fn replay(&self, query_key: &str) -> Result<Option<Replay>> {
        Ledger::check(&self.conn, &self.path)?;
        let row: Option<(i64, String, String, String)> = self
            .conn
            .query_row(
                "SELECT id, body, prev_hash, hash FROM entries WHERE query_key = ?1 AND kind IN ('query', 'report') ORDER BY id DESC LIMIT 1",
                params![query_key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((id, body, prev, hash)) = row else { return Ok(None) };
        let c = parse_entry(id, &body, &prev, &hash)?;
        Ok(Some(match Ledger::result_of(&self.conn, &c)? {
            Some(s) => Replay::Stored(s),
            None => Replay::Unfinished { entry: id, hash: c.hash },
        }))
    }

    /// Change the budget (or its rule), recording who and why. Refused when
    /// the new budget is below what is already spent.
    pub fn set_budget(&mut self, new: Budget, reason: &str, analyst: &str, config_file: &str) -> Result<Status> {
        self.append(|_, head| {
            if !new.admits(&head.totals) {
                return Err(LedgerError::BelowSpent {
                    new_eps: new.epsilon,
                    new_delta: new.delta,
                    spent_eps: new.epsilon_spent(&head.totals),
                    spent_delta: head.totals.delta,
                    rule: new.rule,
                });
            }
            let e = Entry {
                id: 0,
                time: now(),
                kind: "budget".into(),
                analyst: analyst.into(),
                text: format!("budget ε={}, δ={} ({}; was ε={}, δ={}): {reason}", new.epsilon, new.delta, new.rule, head.budget.epsilon, head.budget.delta),
                query_key: None,
                epsilon: Amount::ZERO,
                delta: Amount::ZERO,
                releases: vec![],
                params: serde_json::json!({ "reason": reason, "source": config_file }),
                data_version: None,
                charge_id: None,
                result_hash: None,
                budget: new,
                totals: head.totals,
                analyst_totals: None,
                prev_hash: String::new(),
                hash: String::new(),
            };
            Ok((vec![e], ()))
        })?;
        self.config_drift = None;
        self.status()
    }

    /// Entries from `from` (inclusive, default the first), at most `limit`.
    pub fn entries(&self, from: Option<i64>, limit: Option<i64>) -> Result<Vec<Entry>> {
        let mut st =
            self.conn.prepare("SELECT id, kind, analyst, query_key, charge_id, body, prev_hash, hash FROM entries WHERE id >= ?1 ORDER BY id LIMIT ?2")?;
        let rows = st.query_map(params![from.unwrap_or(1), limit.unwrap_or(i64::MAX)], row_tuple)?;
        let mut out = Vec::new();
        for r in rows {
            let r = r?;
            out.push(parse_entry(r.0, &r.5, &r.6, &r.7)?);
        }
        Ok(out)
    }

    /// The stored result of a charge (for exports), unverified.
    pub fn results(&self) -> Result<Vec<(i64, String)>> {
        let mut st = self.conn.prepare("SELECT charge_id, result FROM results ORDER BY charge_id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Spending per analyst (basic composition): (analyst, charges, ε, δ).
    pub fn by_analyst(&self) -> Result<Vec<(String, Totals)>> {
        let mut st = self.conn.prepare(
            "SELECT e.analyst, e.id, e.body, e.prev_hash, e.hash FROM entries e
             JOIN (SELECT analyst, MAX(id) AS id FROM entries WHERE kind IN ('query', 'report') GROUP BY analyst) m ON m.id = e.id ORDER BY e.analyst",
        )?;
        let rows =
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (a, id, b, p, h) = r?;
            out.push((a, parse_entry(id, &b, &p, &h)?.analyst_totals.unwrap_or_default()));
        }
        Ok(out)
    }

    /// Check and charge several requests in order, in one transaction (one
    /// fsync): each is admitted against the totals including the ones before it.
    /// For imports and benchmarks; stops at the first refusal, recording nothing.
    pub fn charge_batch(&mut self, reqs: &[ChargeRequest]) -> Result<i64> {
        self.append(|_, head| {
            let mut out = Vec::new();
            let mut totals = head.totals;
            for r in reqs {
                let after = totals.with(&r.releases);
                if !head.budget.admits(&after) {
                    return Err(LedgerError::Exhausted {
                        what: r.kind.clone(),
                        need: format!("{:?}", accountant::basic(&r.releases)),
                        remaining: "less".into(),
                        total: head.budget.epsilon.to_string(),
                        rule: head.budget.rule,
                    });
                }
                let (epsilon, delta) = accountant::basic(&r.releases);
                out.push(Entry {
                    id: 0,
                    time: now(),
                    kind: r.kind.clone(),
                    analyst: r.analyst.clone(),
                    text: r.text.clone(),
                    query_key: r.query_key.clone(),
                    epsilon,
                    delta,
                    releases: r.releases.clone(),
                    params: r.params.clone(),
                    data_version: Some(r.data_version.clone()),
                    charge_id: None,
                    result_hash: None,
                    budget: head.budget,
                    totals: after,
                    analyst_totals: None,
                    prev_hash: String::new(),
                    hash: String::new(),
                });
                totals = after;
            }
            let n = out.len() as i64;
            Ok((out, n))
        })
    }

    /// Recompute everything: the chain, every entry's hash and running totals,
    /// result hashes, the anchor; `against` also checks a published head.
    pub fn verify(&self, against: Option<&Head>) -> Result<VerifyReport> {
        let check: String = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Ok(VerifyReport {
                ok: false,
                entries: 0,
                first_bad: None,
                problem: Some(format!("SQLite integrity check failed: {check}")),
                unfinished: vec![],
                head: None,
            });
        }
        let mut st = self.conn.prepare("SELECT id, kind, analyst, query_key, charge_id, body, prev_hash, hash FROM entries ORDER BY id")?;
        let rows = st.query_map([], row_tuple)?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut prev: Option<Entry> = None;
        let fail =
            |id: i64, n: usize, p: String| VerifyReport { ok: false, entries: n as i64, first_bad: Some(id), problem: Some(p), unfinished: vec![], head: None };
        for row in rows {
            let row = row?;
            let id = row.0;
            match check_row(row, prev.as_ref()) {
                Ok(e) => {
                    prev = Some(e.clone());
                    entries.push(e);
                }
                Err(e) => return Ok(fail(id, entries.len() + 1, e.to_string())),
            }
        }
        let n = entries.len();
        let Some(last) = entries.last() else { return Ok(fail(1, 0, "the ledger has no entries (no genesis)".into())) };
        let head = Head { entries: last.id, hash: last.hash.clone() };
        match anchor::read(&self.path) {
            Ok(Some(a)) if a.committed == head || a.pending.as_ref() == Some(&head) => {}
            Ok(Some(a)) => {
                return Ok(fail(
                    head.entries.min(a.committed.entries) + 1,
                    n,
                    format!("the chain ends at {head} but ledger.anchor records {}: entries were deleted, added or rewritten outside dpq", a.committed),
                ));
            }
            Ok(None) => return Ok(fail(head.entries, n, format!("{} is missing", anchor::path(&self.path).display()))),
            Err(p) => return Ok(fail(head.entries, n, p)),
        }
        if let Some(want) = against {
            match entries.get((want.entries - 1).max(0) as usize) {
                Some(e) if want.entries >= 1 && e.hash == want.hash => {}
                Some(_) if want.entries >= 1 => {
                    return Ok(fail(
                        want.entries,
                        n,
                        format!("entry {} does not have the published hash {}: the record was rewritten", want.entries, want.hash),
                    ));
                }
                _ => return Ok(fail(want.entries, n, format!("the published anchor {want} is beyond the chain's end ({head}): entries were deleted"))),
            }
        }
        // results: each stored result belongs to a result entry with its hash; each result entry has its result
        let stored: std::collections::HashMap<i64, String> = self.results()?.into_iter().collect();
        let mut answered = std::collections::HashSet::new();
        for e in entries.iter().filter(|e| e.kind == "result") {
            let c = e.charge_id.unwrap_or(0);
            answered.insert(c);
            match stored.get(&c) {
                None => return Ok(fail(e.id, n, format!("the stored result of entry {c} was deleted (entry {} records it)", e.id))),
                Some(t) if Some(result_hash(t)) != e.result_hash => return Ok(fail(e.id, n, format!("the stored result of entry {c} was edited"))),
                _ => {}
            }
        }
        if let Some(c) = stored.keys().find(|c| !answered.contains(c)) {
            return Ok(fail(*c, n, format!("a stored result for entry {c} has no result entry: it was inserted outside dpq")));
        }
        let unfinished = entries.iter().filter(|e| is_charge(&e.kind) && !answered.contains(&e.id)).map(|e| e.id).collect();
        Ok(VerifyReport { ok: true, entries: n as i64, first_bad: None, problem: None, unfinished, head: Some(head) })
    }
}

/// Charge entries are "query" or "report" entries.
pub fn is_charge(kind: &str) -> bool {
    matches!(kind, "query" | "report")
}

fn count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))?)
}

type RowTuple = (i64, String, String, Option<String>, Option<i64>, String, String, String);

fn row_tuple(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowTuple> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn parse_entry(id: i64, body: &str, prev: &str, hash: &str) -> Result<Entry> {
    let mut e: Entry = serde_json::from_str(body).map_err(|m| LedgerError::Malformed { id, message: format!("unreadable: {m}") })?;
    if e.id != id || e.prev_hash != prev {
        return Err(LedgerError::Broken { problem: format!("entry {id} was edited (its stored fields disagree with its content)") });
    }
    e.hash = hash.to_string();
    Ok(e)
}

/// Check one stored row against the previous entry: hash, chain, indexed
/// columns, and the running totals and budget it carries.
fn check_row(r: RowTuple, prev: Option<&Entry>) -> Result<Entry> {
    let (id, kind, analyst, key, charge_id, body, prev_hash, hash) = r;
    let bad = |p: String| LedgerError::Broken { problem: p };
    let e = parse_entry(id, &body, &prev_hash, &hash).map_err(|_| bad(format!("entry {id} was edited (it no longer reads as an entry)")))?;
    if Entry::compute_hash(&body, &prev_hash) != hash {
        return Err(bad(format!("entry {id} was edited (its content no longer matches its hash)")));
    }
    if e.kind != kind || e.analyst != analyst || e.query_key != key || e.charge_id != charge_id {
        return Err(bad(format!("entry {id}'s index columns were edited")));
    }
    match prev {
        None => {
            if id != 1 || e.kind != "genesis" || prev_hash != GENESIS_PREV {
                return Err(bad(format!("entry {id} should be the genesis entry 1 (earlier entries were deleted)")));
            }
            if e.totals != Totals::default() {
                return Err(bad("the genesis entry carries non-zero totals".into()));
            }
        }
        Some(p) => {
            if id != p.id + 1 {
                return Err(bad(format!("entry {} is missing (deleted)", p.id + 1)));
            }
            if prev_hash != p.hash {
                return Err(bad(format!("entry {id} does not follow entry {} (an entry was deleted or inserted before it)", p.id)));
            }
            let want = match e.kind.as_str() {
                "query" | "report" => p.totals.with(&e.releases),
                "result" | "budget" => p.totals,
                other => return Err(bad(format!("entry {id} has an unknown kind `{other}`"))),
            };
            if e.totals != want {
                return Err(bad(format!("entry {id}'s running totals do not add up (the amounts were edited)")));
            }
            if is_charge(&e.kind) && accountant::basic(&e.releases) != (e.epsilon, e.delta) {
                return Err(bad(format!("entry {id}'s charge disagrees with its releases")));
            }
            if e.kind != "budget" && e.budget != p.budget {
                return Err(bad(format!("entry {id} changes the budget without a budget entry")));
            }
            if e.kind == "result" && e.charge_id.is_none_or(|c| c >= id) {
                return Err(bad(format!("result entry {id} refers to no earlier charge")));
            }
        }
    }
    Ok(e)
}

/// Insert one entry (its hash computed from its body and previous hash).
fn insert(tx: &Connection, mut e: Entry) -> Result<Head> {
    let body = e.body();
    e.hash = Entry::compute_hash(&body, &e.prev_hash);
    tx.execute(
        "INSERT INTO entries (id, kind, analyst, query_key, charge_id, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![e.id, e.kind, e.analyst, e.query_key, e.charge_id, body, e.prev_hash, e.hash],
    )?;
    Ok(Head { entries: e.id, hash: e.hash })
}

/// Who is asking: `--as NAME`, else `DPQ_ANALYST`, else the OS user.
pub fn analyst(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var("DPQ_ANALYST").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub fn fmt_eps(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    if s.is_empty() { "0".into() } else { s }
}

#[cfg(test)]
mod test;
