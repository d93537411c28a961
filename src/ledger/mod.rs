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
    #[error(
        "{config}: the privacy settings of the tables (public flags, privacy units, one-row-per-person) differ from the ones the ledger recorded ({what})\n  a change of what is private changes what every later answer means, so it is recorded like a budget change\n  fix: restore dpq.toml, or record the change: dpq budget accept-config --reason \"…\""
    )]
    PolicyDrift { config: String, what: String },
    #[error("this query was charged meanwhile by another process (ledger entry {entry}); its answer is replayed")]
    AlreadyCharged { entry: i64 },
    #[error("internal error in dpq's ledger (a bug; please report it): {0}")]
    Internal(String),
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
    /// Draw new noise even if the key was charged before (`--fresh`).
    #[serde(default)]
    pub fresh: bool,
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
    /// A charge: its analyst's running totals after it (quota admission reads
    /// the analyst's latest charge; nothing else carries per-analyst totals, so
    /// an entry's size does not grow with the number of analysts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyst_total: Option<Totals>,
    /// SHA-256 of the privacy policy in force (which tables are private, their
    /// units, one row per person).
    #[serde(default)]
    pub policy: String,
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
    /// Charged but never answered (the process died): the protocol records it
    /// as a failure for its analyst (never redrawn); another analyst pays anew.
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
    /// dpq.toml's `[budget]` differs from the ledger's (charging is refused).
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

/// The dataset facts the ledger is checked against.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    /// Tables holding data, with the dataset id their manifests record (if any).
    pub tables: Vec<(String, Option<String>)>,
    /// dpq.toml's `[budget]` (used once, to create the ledger) and the file's name.
    pub config_budget: (Amount, Amount),
    pub config_file: String,
    /// dpq.toml's privacy policy: per table, (public, privacy unit, one row per unit).
    pub policy: std::collections::BTreeMap<String, (bool, Option<String>, bool)>,
}

impl Binding {
    /// The policy as canonical JSON and its SHA-256.
    pub fn policy_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.policy
                .iter()
                .map(|(t, (public, unit, one))| (t.clone(), serde_json::json!({ "public": public, "privacy_unit": unit, "one_row_per_unit": one })))
                .collect(),
        )
    }
    pub fn policy_hash(&self) -> String {
        sha256_hex(&[self.policy_json().to_string().as_bytes()])
    }
}

/// Held while one query key is answered — replay check, charge, computation,
/// stored result — by any process or connection. Without it, a second asker
/// of the same query (another gateway connection, another process) would
/// find the first one's charge still computing and take it for the charge of
/// a process that died: it would record it as failed under the first asker's
/// feet, or pay for a second charge of its own. With it the second asker
/// waits, then replays the stored answer. An advisory lock (`flock`) on one of
/// 256 files beside ledger.db chosen by the key's hash: the operating system
/// releases it when its holder dies, so a charge found unfinished under the
/// lock is one whose process ended.
#[derive(Debug)]
pub struct KeyLock {
    _file: std::fs::File,
}

impl KeyLock {
    /// Wait for the lock at `path` (from [`Ledger::key_lock_path`]). Blocking.
    pub fn acquire(path: &Path) -> Result<KeyLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::Io { path: dir.display().to_string(), message: e.to_string() })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| LedgerError::Io { path: path.display().to_string(), message: e.to_string() })?;
        file.lock().map_err(|e| LedgerError::Io { path: path.display().to_string(), message: format!("locking: {e}") })?;
        Ok(KeyLock { _file: file })
    }
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    dataset: String,
    binding: Binding,
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

/// The database holds exactly the schema dpq creates: no trigger, view, extra
/// index or table, and no table redefined (a trigger or a CHECK constraint
/// that aborts some inserts would let an attacker with write access reject
/// answers until one suits them).
fn check_schema(conn: &Connection) -> Result<()> {
    let norm = |s: &str| s.replace("IF NOT EXISTS ", "").split_whitespace().collect::<Vec<_>>().join(" ");
    let want: std::collections::BTreeSet<String> = SCHEMA.split(';').map(norm).filter(|s| !s.is_empty()).collect();
    let mut st = conn.prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_autoindex_%'")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))?;
    let mut have = std::collections::BTreeSet::new();
    for r in rows {
        let (kind, name, sql) = r?;
        let sql = norm(&sql.unwrap_or_default());
        if !want.contains(&sql) {
            return Err(LedgerError::Broken { problem: format!("the ledger's database schema was changed outside dpq ({kind} `{}`)", printable(&name)) });
        }
        have.insert(sql);
    }
    if have != want {
        return Err(LedgerError::Broken { problem: "the ledger's database schema was changed outside dpq (a table or index is missing)".into() });
    }
    Ok(())
}

const ENTRY_COLUMNS: &str = "id, kind, analyst, query_key, charge_id, body, prev_hash, hash";

fn io_err(p: &Path, e: std::io::Error) -> LedgerError {
    LedgerError::Io { path: p.display().to_string(), message: e.to_string() }
}

impl Ledger {
    /// Open the ledger of a dataset, creating it (with its genesis entry) only
    /// when the dataset holds no data yet. Checks that it is this dataset's
    /// ledger; the chain itself is checked by every charge and replay.
    pub fn open(path: &Path, binding: &Binding, analyst: &str) -> Result<Ledger> {
        if std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true) {
            if !binding.tables.is_empty() {
                return Err(LedgerError::Missing {
                    path: path.display().to_string(),
                    tables: binding.tables.iter().map(|t| t.0.clone()).collect::<Vec<_>>().join(", "),
                });
            }
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
        // the dataset's identity comes from the hashed genesis entry, and everything else must agree
        let genesis = Ledger::entry_at(&conn, 1)?.ok_or_else(|| LedgerError::Broken { problem: "the ledger has no genesis entry".into() })?;
        let dataset = genesis.params.get("dataset").and_then(|d| d.as_str()).unwrap_or_default().to_string();
        let meta: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'dataset'", [], |r| r.get(0)).optional()?;
        if genesis.kind != "genesis" || dataset.is_empty() || meta.as_deref() != Some(dataset.as_str()) {
            return Err(LedgerError::Broken { problem: "the ledger's dataset id was edited (its genesis entry and its records disagree)".into() });
        }
        for (_, id) in &binding.tables {
            match id {
                Some(id) if id == &dataset => {}
                Some(id) => return Err(LedgerError::Foreign { path: path.display().to_string(), ledger: dataset, dataset: id.clone() }),
                None => {
                    return Err(LedgerError::Foreign {
                        path: path.display().to_string(),
                        ledger: dataset,
                        dataset: "no id (a manifest that does not name its dataset)".into(),
                    });
                }
            }
        }
        Ok(Ledger { conn, path: path.to_path_buf(), dataset, binding: binding.clone() })
    }

    fn connect(path: &Path) -> Result<Connection> {
        let open_err = |e: rusqlite::Error| LedgerError::Open { path: path.display().to_string(), message: e.to_string() };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        // (SQLite's whole-file integrity check is part of `verify`, not of every open)
        Ok(conn)
    }

    /// A new ledger with its genesis entry (a new dataset id, the configured
    /// budget and privacy policy), under the writers' lock.
    fn create(path: &Path, binding: &Binding, analyst: &str) -> Result<()> {
        let _lock = anchor::lock(path).map_err(|e| io_err(path, e))?;
        if std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false) {
            return Ok(()); // another process created it meanwhile
        }
        for leftover in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
            let _ = std::fs::remove_file(path.with_file_name(leftover));
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
            params: serde_json::json!({ "dataset": dataset, "format": FORMAT, "source": binding.config_file, "policy": binding.policy_json() }),
            data_version: None,
            charge_id: None,
            result_hash: None,
            budget,
            totals: Totals::default(),
            analyst_total: None,
            policy: binding.policy_hash(),
            prev_hash: GENESIS_PREV.into(),
            hash: String::new(),
        };
        let head = insert(&tx, genesis)?;
        let a = Anchor {
            format: anchor::FORMAT.into(),
            dataset: dataset.clone(),
            committed: head.clone(),
            pending: Some(head.clone()),
            verified: None,
            broken: None,
        };
        anchor::write(path, &a).map_err(|e| io_err(&anchor::path(path), e))?;
        tx.commit()?;
        anchor::write(path, &Anchor { pending: None, verified: Some(head.clone()), ..a }).map_err(|e| io_err(&anchor::path(path), e))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    fn entry_at(conn: &Connection, id: i64) -> Result<Option<Entry>> {
        if id == 0 {
            return Ok(None);
        }
        let row = conn.query_row(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?1"), params![id], row_tuple).optional()?;
        row.map(checked_entry).transpose()
    }

    fn head_entry_in(conn: &Connection) -> Result<Option<Entry>> {
        let row = conn.query_row(&format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY id DESC LIMIT 1"), [], row_tuple).optional()?;
        row.map(checked_entry).transpose()
    }

    /// Check the ledger for a decision, in one snapshot: the anchor (the head,
    /// the dataset, the sticky broken flag), the head entry's own hash, and the
    /// chain from the anchored verification point to the head. Cheap: only the
    /// entries appended since the last verification are read.
    fn check(conn: &Connection, path: &Path, dataset: &str) -> Result<(Entry, Anchor)> {
        let a = match anchor::read(path).map_err(|problem| LedgerError::Broken { problem })? {
            None => return Err(LedgerError::Broken { problem: format!("{} is missing (the head is anchored there)", anchor::path(path).display()) }),
            Some(a) => a,
        };
        if let Some(b) = &a.broken {
            return Err(LedgerError::Broken { problem: format!("{b} (recorded when it was found; restore ledger.db and ledger.anchor from a backup)") });
        }
        check_schema(conn)?;
        if a.dataset != dataset {
            return Err(LedgerError::Broken { problem: "ledger.anchor belongs to another dataset".into() });
        }
        let head = Ledger::head_entry_in(conn)?.ok_or_else(|| LedgerError::Broken { problem: "the ledger has no entries (no genesis)".into() })?;
        let h = Head { entries: head.id, hash: head.hash.clone() };
        if a.committed != h && a.pending.as_ref() != Some(&h) {
            return Err(LedgerError::Broken {
                problem: format!(
                    "the chain ends at entry {} but ledger.anchor records {}: entries were deleted, added or rewritten outside dpq",
                    h.entries, a.committed
                ),
            });
        }
        let from = a.verified.clone().unwrap_or(Head { entries: 1, hash: String::new() });
        if from.entries > h.entries {
            return Err(LedgerError::Broken { problem: format!("the ledger was verified up to entry {} but now ends at {}", from.entries, h.entries) });
        }
        let start = Ledger::entry_at(conn, from.entries)?.ok_or_else(|| LedgerError::Broken { problem: format!("entry {} is missing", from.entries) })?;
        if !from.hash.is_empty() && start.hash != from.hash {
            return Err(LedgerError::Broken { problem: format!("entry {} changed after it was verified", from.entries) });
        }
        Ledger::walk(conn, start, h.entries, |_| {})?;
        Ok((head, a))
    }

    /// Check every entry after `start` up to entry `to`: hashes, links, index
    /// columns, running totals; `f` sees each checked entry.
    fn walk(conn: &Connection, start: Entry, to: i64, mut f: impl FnMut(&Entry)) -> Result<()> {
        let mut st = conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id > ?1 AND id <= ?2 ORDER BY id"))?;
        let rows = st.query_map(params![start.id, to], row_tuple)?;
        let mut prev = start;
        for row in rows {
            let e = check_row(row?, Some(&prev))?;
            f(&e);
            prev = e;
        }
        if prev.id != to {
            return Err(LedgerError::Broken { problem: format!("entry {} is missing (deleted)", prev.id + 1) });
        }
        Ok(())
    }

    /// Run `f` on one consistent snapshot (shared writers' lock, one read transaction).
    fn snapshot<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _lock = anchor::lock_shared(&self.path).map_err(|e| io_err(&self.path, e))?;
        let tx = self.conn.unchecked_transaction()?;
        let out = f(&tx);
        drop(tx);
        out
    }

    /// Record that the ledger failed a check: it admits nothing until restored.
    fn mark_broken(&self, problem: &str) {
        if let Ok(_lock) = anchor::lock(&self.path)
            && let Ok(Some(mut a)) = anchor::read(&self.path)
            && a.broken.is_none()
        {
            a.broken = Some(problem.to_string());
            let _ = anchor::write(&self.path, &a);
        }
    }

    /// `r`, with a verification failure made sticky.
    fn sticky<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(LedgerError::Broken { problem }) = &r
            && !problem.contains("recorded when it was found")
        {
            self.mark_broken(problem);
        }
        r
    }

    /// Append entries built from the current (checked) head, atomically, under
    /// the writers' lock; the anchor records the new head and verification point.
    fn append<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction<'_>, &Entry) -> Result<(Vec<Entry>, T)>) -> Result<T> {
        self.append_returning_head(f).map(|(out, _)| out)
    }

    /// [`Ledger::append`], also returning the last entry it appended (the
    /// head as of this commit, whatever other writers do next).
    fn append_returning_head<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction<'_>, &Entry) -> Result<(Vec<Entry>, T)>) -> Result<(T, Option<Entry>)> {
        let lock = anchor::lock(&self.path).map_err(|e| io_err(&self.path, e))?;
        let path = self.path.clone();
        let dataset = self.dataset.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let checked = Ledger::check(&tx, &path, &dataset);
        let (head, a) = match checked {
            Ok(x) => x,
            Err(e) => {
                drop(tx);
                drop(lock);
                return self.sticky(Err(e));
            }
        };
        let old = Head { entries: head.id, hash: head.hash.clone() };
        let (new, out) = f(&tx, &head)?;
        if new.is_empty() {
            return Ok((out, None));
        }
        let mut last = old.clone();
        let mut prev = head.clone();
        for (i, mut e) in new.into_iter().enumerate() {
            e.id = head.id + 1 + i as i64;
            e.prev_hash = prev.hash.clone();
            last = insert(&tx, e.clone())?;
            e.hash = last.hash.clone();
            prev = e;
        }
        let pending = Anchor { committed: old, pending: Some(last.clone()), verified: a.verified.clone(), ..a };
        anchor::write(&path, &pending).map_err(|e| io_err(&anchor::path(&path), e))?;
        tx.commit()?;
        // the entries appended here were built from a checked head: verified
        anchor::write(&path, &Anchor { committed: last.clone(), pending: None, verified: Some(last), ..pending })
            .map_err(|e| io_err(&anchor::path(&path), e))?;
        drop(lock);
        Ok((out, Some(prev)))
    }

    /// The status from the head entry (constant cost). Read-only commands use
    /// it even when the ledger does not verify; [`Ledger::health`] says whether it does.
    pub fn status(&self) -> Result<Status> {
        let head = self.snapshot(Ledger::head_entry_in)?.ok_or_else(|| LedgerError::Broken { problem: "the ledger has no entries (no genesis)".into() })?;
        Ok(self.status_of(&head))
    }

    /// Whether the ledger passes the checks every charge makes (and why not).
    pub fn health(&self) -> Option<String> {
        match self.sticky(self.snapshot(|c| Ledger::check(c, &self.path, &self.dataset))) {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        }
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
            config_drift: self.drift(head).map(|e| e.to_string()),
        }
    }

    /// dpq.toml disagrees with the ledger: its `[budget]` was edited by hand, or
    /// its privacy policy changed without being recorded.
    fn drift(&self, head: &Entry) -> Option<LedgerError> {
        let (ce, cd) = self.binding.config_budget;
        if (ce, cd) != (head.budget.epsilon, head.budget.delta) {
            return Some(LedgerError::ConfigDrift {
                config: self.binding.config_file.clone(),
                config_eps: ce,
                config_delta: cd,
                ledger_eps: head.budget.epsilon,
                ledger_delta: head.budget.delta,
            });
        }
        if self.binding.policy_hash() != head.policy {
            return Some(LedgerError::PolicyDrift { config: self.binding.config_file.clone(), what: "see `dpq budget --log` for the recorded policy".into() });
        }
        None
    }

    /// Refuse unless the ledger verifies and dpq.toml agrees with it. Every
    /// command that answers a query (even one over public tables) calls it.
    pub fn ensure_current(&self) -> Result<()> {
        let (head, _) = self.sticky(self.snapshot(|c| Ledger::check(c, &self.path, &self.dataset)))?;
        match self.drift(&head) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Check and charge in one transaction. Refuses (and records nothing) when
    /// the charge does not fit the dataset's budget or the analyst's quota, or
    /// (without `fresh`) when the same key was charged meanwhile.
    pub fn charge(&mut self, req: &ChargeRequest) -> Result<Charged> {
        let (epsilon, delta) = accountant::basic(&req.releases);
        let drift_binding = self.binding.clone();
        let (_, head) = self.append_returning_head(|tx, head| {
            let me = Ledger { conn: Connection::open_in_memory()?, path: PathBuf::new(), dataset: String::new(), binding: drift_binding };
            if let Some(e) = me.drift(head) {
                return Err(e);
            }
            if let (Some(key), false) = (&req.query_key, req.fresh)
                && let Some(entry) = Ledger::latest_charge(tx, key, head)?
            {
                return Err(LedgerError::AlreadyCharged { entry: entry.id });
            }
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
            let mine = Ledger::analyst_total(tx, &req.analyst, head.id)?.with(&req.releases);
            if let Some((qe, qd)) = req.quota
                && (mine.epsilon > qe || mine.delta > qd)
            {
                let used = mine.epsilon.saturating_sub(epsilon);
                return Err(LedgerError::Quota {
                    analyst: req.analyst.clone(),
                    what: req.kind.clone(),
                    need: epsilon,
                    remaining: qe.saturating_sub(used),
                    quota: qe,
                });
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
                analyst_total: Some(mine),
                policy: head.policy.clone(),
                prev_hash: String::new(),
                hash: String::new(),
            };
            Ok((vec![e], ()))
        })?;
        let head = head.ok_or_else(|| LedgerError::Internal("a charge appended no entry".into()))?;
        Ok(Charged { entry: head.id, hash: head.hash.clone(), epsilon, delta, status: self.status_of(&head) })
    }

    /// An analyst's running totals as of entry `upto`: from their latest charge.
    fn analyst_total(conn: &Connection, analyst: &str, upto: i64) -> Result<Totals> {
        let row = conn
            .query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE analyst = ?1 AND kind IN ('query', 'report') AND id <= ?2 ORDER BY id DESC LIMIT 1"),
                params![analyst, upto],
                row_tuple,
            )
            .optional()?;
        match row {
            None => Ok(Totals::default()),
            Some(r) => {
                let e = checked_entry(r)?;
                e.analyst_total.ok_or_else(|| LedgerError::Broken { problem: format!("charge entry {} carries no analyst totals", e.id) })
            }
        }
    }

    /// The latest charge for a key, proven genuine by a walk from it to the head.
    fn latest_charge(conn: &Connection, key: &str, head: &Entry) -> Result<Option<Entry>> {
        let row = conn
            .query_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE query_key = ?1 AND kind IN ('query', 'report') ORDER BY id DESC LIMIT 1"),
                params![key],
                row_tuple,
            )
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let c = checked_entry(row)?;
        if c.id > head.id || c.query_key.as_deref() != Some(key) {
            return Err(LedgerError::Broken { problem: format!("entry {}'s replay key was edited", c.id) });
        }
        Ok(Some(c))
    }

    /// The result entry of `charge`, found — or proven absent — by walking the
    /// chain from the charge to the head (hashes and links checked on the way),
    /// and its stored text checked against the hash the entry records. With
    /// `latest`, `charge` came from the key index as the key's latest charge: a
    /// later charge with the same key on the chain proves the index was edited.
    /// (Storing the result of an earlier charge, a later one with the same key
    /// is legitimate: another analyst's own charge after this one's process
    /// died, or a `--fresh` one.)
    fn result_of(conn: &Connection, charge: &Entry, head: i64, latest: bool) -> Result<Option<Stored>> {
        let mut found: Option<Entry> = None;
        let mut keys_after = None;
        Ledger::walk(conn, charge.clone(), head, |e| {
            if e.kind == "result" && e.charge_id == Some(charge.id) && found.is_none() {
                found = Some(e.clone());
            }
            if latest && is_charge(&e.kind) && e.query_key == charge.query_key && e.query_key.is_some() {
                keys_after.get_or_insert(e.id);
            }
        })?;
        if let Some(later) = keys_after {
            // the key index skipped a later charge with the same key: edited
            return Err(LedgerError::Broken { problem: format!("entry {later}'s replay key index was edited") });
        }
        let Some(re) = found else {
            let orphan: bool = conn.query_row("SELECT COUNT(*) > 0 FROM results WHERE charge_id = ?1", params![charge.id], |r| r.get(0))?;
            if orphan {
                return Err(LedgerError::Broken {
                    problem: format!("a stored result for entry {} has no result entry: it was inserted or its entry edited outside dpq", charge.id),
                });
            }
            return Ok(None);
        };
        let text: Option<String> = conn.query_row("SELECT result FROM results WHERE charge_id = ?1", params![charge.id], |r| r.get(0)).optional()?;
        let text =
            text.ok_or_else(|| LedgerError::Broken { problem: format!("the stored result of entry {} was deleted (entry {} records it)", charge.id, re.id) })?;
        let want = re.result_hash.clone().unwrap_or_default();
        if result_hash(&text) != want {
            return Err(LedgerError::Broken {
                problem: format!("the stored result of entry {} was edited (it no longer matches the hash in entry {})", charge.id, re.id),
            });
        }
        let result = serde_json::from_str(&text).map_err(|e| LedgerError::Malformed { id: re.id, message: e.to_string() })?;
        Ok(Some(Stored { charge: charge.id, charge_hash: charge.hash.clone(), result_entry: re.id, result_hash: want, result }))
    }

    /// Store the released result of a charge, with a `result` entry covering
    /// its hash, in one transaction — before it is shown. If the charge already
    /// has a result (another process finished it first), that one is returned
    /// and nothing is stored: only one answer is ever shown per charge.
    pub fn store_result(&mut self, charge: i64, result: &serde_json::Value, analyst: &str, params: serde_json::Value) -> Result<Stored> {
        let text = result.to_string();
        let hash = result_hash(&text);
        self.append(|tx, head| {
            let c = Ledger::entry_at(tx, charge)?.ok_or_else(|| LedgerError::Broken { problem: format!("entry {charge} is missing") })?;
            if !is_charge(&c.kind) {
                return Err(LedgerError::Broken { problem: format!("entry {charge} is not a charge") });
            }
            if let Some(existing) = Ledger::result_of(tx, &c, head.id, false)? {
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
                analyst_total: None,
                policy: head.policy.clone(),
                prev_hash: String::new(),
                hash: String::new(),
            };
            let stored = Stored { charge, charge_hash: c.hash.clone(), result_entry: head.id + 1, result_hash: hash.clone(), result: result.clone() };
            Ok((vec![e], stored))
        })
    }

    /// The stored answer for a query key, verified; or a charge still to finish.
    /// Costs a walk from that charge to the head (recent answers are cheap).
    pub fn replay(&self, query_key: &str) -> Result<Option<Replay>> {
        let r = self.snapshot(|conn| {
            let (head, _) = Ledger::check(conn, &self.path, &self.dataset)?;
            let Some(c) = Ledger::latest_charge(conn, query_key, &head)? else { return Ok(None) };
            Ok(Some(match Ledger::result_of(conn, &c, head.id, true)? {
                Some(s) => Replay::Stored(s),
                None => Replay::Unfinished { entry: c.id, hash: c.hash },
            }))
        });
        self.sticky(r)
    }

    /// The lock file serialising the answers to `key` (see [`KeyLock`]).
    pub fn key_lock_path(&self, key: &str) -> PathBuf {
        let stripe = Sha256::digest(key.as_bytes())[0];
        let mut dir = self.path.clone().into_os_string();
        dir.push(".locks");
        PathBuf::from(dir).join(format!("{stripe:02x}"))
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
                text: format!("budget ε={}, δ={} ({}; was ε={}, δ={}): {reason}", new.epsilon, new.delta, new.rule, head.budget.epsilon, head.budget.delta),
                params: serde_json::json!({ "reason": reason, "source": config_file }),
                budget: new,
                ..Ledger::plain(head, "budget", analyst)
            };
            Ok((vec![e], ()))
        })?;
        self.binding.config_budget = (new.epsilon, new.delta);
        self.status()
    }

    /// Record dpq.toml's current privacy policy (which tables are private,
    /// their units, one row per person), with who and why.
    pub fn accept_policy(&mut self, reason: &str, analyst: &str) -> Result<Status> {
        let policy = self.binding.policy_json();
        let hash = self.binding.policy_hash();
        self.append(|_, head| {
            if head.policy == hash {
                return Ok((vec![], ()));
            }
            let e = Entry {
                text: format!("privacy policy changed: {reason}"),
                params: serde_json::json!({ "reason": reason, "policy": policy }),
                policy: hash.clone(),
                ..Ledger::plain(head, "policy", analyst)
            };
            Ok((vec![e], ()))
        })?;
        self.status()
    }

    /// An entry that changes nothing but what the caller sets.
    fn plain(head: &Entry, kind: &str, analyst: &str) -> Entry {
        Entry {
            id: 0,
            time: now(),
            kind: kind.into(),
            analyst: analyst.into(),
            text: String::new(),
            query_key: None,
            epsilon: Amount::ZERO,
            delta: Amount::ZERO,
            releases: vec![],
            params: serde_json::Value::Null,
            data_version: None,
            charge_id: None,
            result_hash: None,
            budget: head.budget,
            totals: head.totals,
            analyst_total: None,
            policy: head.policy.clone(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Entries from `from` (inclusive, default the first), at most `limit`, for
    /// display (each checked against its own hash; `verify` checks the chain).
    pub fn entries(&self, from: Option<i64>, limit: Option<i64>) -> Result<Vec<Entry>> {
        self.snapshot(|conn| {
            let mut st = conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id >= ?1 ORDER BY id LIMIT ?2"))?;
            let rows = st.query_map(params![from.unwrap_or(1), limit.unwrap_or(i64::MAX)], row_tuple)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(checked_entry(r?)?);
            }
            Ok(out)
        })
    }

    /// The params of the latest `n` result entries, newest first (each checked
    /// against its own hash).
    pub fn recent_results(&self, n: i64) -> Result<Vec<serde_json::Value>> {
        self.snapshot(|conn| {
            let mut st = conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE kind = 'result' ORDER BY id DESC LIMIT ?1"))?;
            let rows = st.query_map(params![n], row_tuple)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(checked_entry(r?)?.params);
            }
            Ok(out)
        })
    }

    /// The stored results (for exports), unverified.
    pub fn results(&self) -> Result<Vec<(i64, String)>> {
        let mut st = self.conn.prepare("SELECT charge_id, result FROM results ORDER BY charge_id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Spending per analyst: each analyst's latest charge (a scan of the charges).
    pub fn by_analyst(&self) -> Result<Vec<(String, Totals)>> {
        self.snapshot(|conn| {
            let mut st = conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE kind IN ('query', 'report') ORDER BY id"))?;
            let rows = st.query_map([], row_tuple)?;
            let mut out = std::collections::BTreeMap::new();
            for r in rows {
                let e = checked_entry(r?)?;
                out.insert(e.analyst.clone(), e.analyst_total.unwrap_or_default());
            }
            Ok(out.into_iter().collect())
        })
    }

    /// Check and charge several requests in order, in one transaction (one
    /// fsync): each is admitted against the totals including the ones before it.
    /// For imports and benchmarks; stops at the first refusal, recording nothing.
    pub fn charge_batch(&mut self, reqs: &[ChargeRequest]) -> Result<i64> {
        self.append(|tx, head| {
            let mut out = Vec::new();
            let mut totals = head.totals;
            let mut analysts: std::collections::HashMap<String, Totals> = std::collections::HashMap::new();
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
                let before = match analysts.get(&r.analyst) {
                    Some(t) => *t,
                    None => Ledger::analyst_total(tx, &r.analyst, head.id)?,
                };
                let mine = before.with(&r.releases);
                analysts.insert(r.analyst.clone(), mine);
                out.push(Entry {
                    text: r.text.clone(),
                    query_key: r.query_key.clone(),
                    epsilon,
                    delta,
                    releases: r.releases.clone(),
                    params: r.params.clone(),
                    data_version: Some(r.data_version.clone()),
                    totals: after,
                    analyst_total: Some(mine),
                    ..Ledger::plain(head, &r.kind, &r.analyst)
                });
                totals = after;
            }
            let n = out.len() as i64;
            Ok((out, n))
        })
    }

    /// Recompute everything: SQLite's integrity check, the chain, every entry's
    /// hash and running totals, result hashes, the dataset id, the anchor;
    /// `against` also checks a published head. A failure is recorded (the
    /// ledger then admits nothing until restored).
    pub fn verify(&self, against: Option<&Head>) -> Result<VerifyReport> {
        let report = self.snapshot(|conn| self.verify_in(conn, None, false))?;
        if !report.ok {
            self.mark_broken(report.problem.as_deref().unwrap_or("verification failed"));
            return Ok(report);
        }
        match against {
            // a published head that does not match is reported, not recorded:
            // a mistyped head (or another dataset's) must not close a healthy ledger
            Some(h) => self.snapshot(|conn| self.verify_in(conn, Some(h), false)),
            None => Ok(report),
        }
    }

    /// Reopen a ledger closed by a recorded failure, once everything verifies
    /// again (the file was restored, or the alarm was false): records who and
    /// why in a `reopen` entry.
    pub fn reopen(&mut self, reason: &str, analyst: &str) -> Result<VerifyReport> {
        let report = self.snapshot(|conn| self.verify_in(conn, None, true))?;
        if !report.ok {
            return Ok(report);
        }
        let was = match anchor::read(&self.path).map_err(|problem| LedgerError::Broken { problem })? {
            Some(a) => a.broken.clone(),
            None => None,
        };
        let Some(was) = was else { return Ok(report) };
        {
            let _lock = anchor::lock(&self.path).map_err(|e| io_err(&self.path, e))?;
            if let Some(mut a) = anchor::read(&self.path).map_err(|problem| LedgerError::Broken { problem })? {
                a.broken = None;
                anchor::write(&self.path, &a).map_err(|e| io_err(&anchor::path(&self.path), e))?;
            }
        }
        self.append(|_, head| {
            let e = Entry {
                text: format!("ledger reopened after a recorded failure ({}): {reason}", printable(&was)),
                params: serde_json::json!({ "reason": reason, "failure": was }),
                ..Ledger::plain(head, "reopen", analyst)
            };
            Ok((vec![e], ()))
        })?;
        self.verify(None)
    }

    fn verify_in(&self, conn: &Connection, against: Option<&Head>, ignore_alarm: bool) -> Result<VerifyReport> {
        let fail =
            |id: i64, n: usize, p: String| VerifyReport { ok: false, entries: n as i64, first_bad: Some(id), problem: Some(p), unfinished: vec![], head: None };
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Ok(fail(0, 0, format!("SQLite integrity check failed: {check}")));
        }
        if let Err(LedgerError::Broken { problem }) = check_schema(conn) {
            return Ok(fail(0, 0, problem));
        }
        let mut st = conn.prepare(&format!("SELECT {ENTRY_COLUMNS} FROM entries ORDER BY id"))?;
        let rows = st.query_map([], row_tuple)?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut prev: Option<Entry> = None;
        let mut by_analyst: std::collections::HashMap<String, Totals> = std::collections::HashMap::new();
        for row in rows {
            let row = row?;
            let id = row.0;
            match check_row(row, prev.as_ref()) {
                Ok(e)
                    if is_charge(&e.kind) && {
                        let want = by_analyst.get(&e.analyst).copied().unwrap_or_default().with(&e.releases);
                        by_analyst.insert(e.analyst.clone(), want);
                        e.analyst_total != Some(want)
                    } =>
                {
                    return Ok(fail(id, entries.len() + 1, format!("entry {id}'s analyst totals do not add up (the amounts were edited)")));
                }
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
        let genesis_id = entries[0].params.get("dataset").and_then(|d| d.as_str()).unwrap_or_default();
        if genesis_id != self.dataset {
            return Ok(fail(1, n, "the ledger's dataset id was edited (its genesis entry and its records disagree)".into()));
        }
        match anchor::read(&self.path) {
            Ok(Some(a)) if a.dataset != self.dataset => return Ok(fail(1, n, "ledger.anchor belongs to another dataset".into())),
            Ok(Some(a)) if a.committed == head || a.pending.as_ref() == Some(&head) => {
                if let Some(b) = a.broken.filter(|_| !ignore_alarm) {
                    return Ok(fail(head.entries, n, format!("{b} (recorded when it was found; restore ledger.db and ledger.anchor from a backup)")));
                }
            }
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
        let stored: std::collections::HashMap<i64, String> = {
            let mut st = conn.prepare("SELECT charge_id, result FROM results ORDER BY charge_id")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        let mut answered = std::collections::HashSet::new();
        for e in entries.iter().filter(|e| e.kind == "result") {
            let c = e.charge_id.unwrap_or(0);
            if !answered.insert(c) {
                return Ok(fail(e.id, n, format!("entry {c} has two result entries")));
            }
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

type RowTuple = (i64, String, String, Option<String>, Option<i64>, String, String, String);

fn row_tuple(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowTuple> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn parse_entry(id: i64, body: &str, prev: &str, hash: &str) -> Result<Entry> {
    let mut e: Entry =
        serde_json::from_str(body).map_err(|m| LedgerError::Broken { problem: format!("entry {id} was edited (it no longer reads as an entry: {m})") })?;
    if e.id != id || e.prev_hash != prev {
        return Err(LedgerError::Broken { problem: format!("entry {id} was edited (its stored fields disagree with its content)") });
    }
    e.hash = hash.to_string();
    Ok(e)
}

/// An entry read for a decision: its body must hash to its stored hash and
/// its index columns must match its body.
fn checked_entry(r: RowTuple) -> Result<Entry> {
    let (id, kind, analyst, key, charge_id, body, prev_hash, hash) = r;
    let e = parse_entry(id, &body, &prev_hash, &hash)?;
    if Entry::compute_hash(&body, &prev_hash) != hash {
        return Err(LedgerError::Broken { problem: format!("entry {id} was edited (its content no longer matches its hash)") });
    }
    if e.kind != kind || e.analyst != analyst || e.query_key != key || e.charge_id != charge_id {
        return Err(LedgerError::Broken { problem: format!("entry {id}'s index columns were edited") });
    }
    Ok(e)
}

/// Check one stored row against the previous entry: hash, chain, index
/// columns, and the running totals, budget, analysts and policy it carries.
fn check_row(r: RowTuple, prev: Option<&Entry>) -> Result<Entry> {
    let id = r.0;
    let prev_hash = r.6.clone();
    let e = checked_entry(r)?;
    let bad = |p: String| LedgerError::Broken { problem: p };
    match prev {
        None => {
            if id != 1 || e.kind != "genesis" || prev_hash != GENESIS_PREV {
                return Err(bad(format!("entry {id} should be the genesis entry 1 (earlier entries were deleted)")));
            }
            if e.totals != Totals::default() || e.analyst_total.is_some() {
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
            let totals = match e.kind.as_str() {
                "query" | "report" => p.totals.with(&e.releases),
                "result" | "budget" | "policy" | "reopen" => p.totals,
                other => return Err(bad(format!("entry {id} has an unknown kind `{other}`"))),
            };
            // (a charge's analyst totals are checked against the analyst's previous charge by `verify`)
            if e.totals != totals || is_charge(&e.kind) != e.analyst_total.is_some() {
                return Err(bad(format!("entry {id}'s running totals do not add up (the amounts were edited)")));
            }
            if is_charge(&e.kind) && accountant::basic(&e.releases) != (e.epsilon, e.delta) {
                return Err(bad(format!("entry {id}'s charge disagrees with its releases")));
            }
            if e.kind != "budget" && e.budget != p.budget {
                return Err(bad(format!("entry {id} changes the budget without a budget entry")));
            }
            if e.kind != "policy" && e.policy != p.policy {
                return Err(bad(format!("entry {id} changes the privacy policy without a policy entry")));
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

/// Who is asking: `--as NAME`, else `DPQ_ANALYST`, else the OS user. Control
/// characters are replaced (a name is printed in logs and terminals).
pub fn analyst(explicit: Option<&str>) -> String {
    let name = explicit
        .map(str::to_string)
        .or_else(|| std::env::var("DPQ_ANALYST").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "unknown".into());
    printable(&name).chars().take(64).collect()
}

/// `s` with control characters replaced by U+FFFD (for names and texts shown in terminals).
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// [`printable`], keeping line breaks (for multi-line messages).
pub fn printable_lines(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' { '\u{fffd}' } else { c }).collect()
}

pub fn fmt_eps(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    if s.is_empty() { "0".into() } else { s }
}

#[cfg(test)]
mod test;
