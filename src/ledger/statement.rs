//! The public statement: an export of the whole ledger that anyone can verify
//! without the data (`dpq budget --export DIR`, `dpq verify-statement DIR`).
//!
//! `statement.json` holds every entry exactly as stored (its hashed body and
//! hash) and every released result (the exact text its `result` entry hashes);
//! `index.html` renders them for people. Nothing in it is secret: the ledger
//! holds no seeds, and results are the noisy answers that were published.
//! Verification recomputes every hash, the chain, the running totals and every
//! result's hash; with `--anchor N:HASH` (a published head) it also proves the
//! statement is not a truncated or rewritten copy.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::anchor::Head;
use super::{Entry, Ledger, LedgerError, check_row, result_hash};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatementEntry {
    /// The entry's stored body, byte for byte (what its hash covers).
    pub body: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatementResult {
    pub charge: i64,
    /// The released result's stored text, byte for byte.
    pub result: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    pub format: String,
    pub dataset: String,
    pub exported_at: String,
    pub head: Head,
    pub entries: Vec<StatementEntry>,
    pub results: Vec<StatementResult>,
}

pub const FORMAT: &str = "dpq-statement-1";

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("the statement does not verify: {0}")]
    Invalid(String),
}

/// Write `statement.json` and `index.html` into `dir`.
pub fn export(ledger: &Ledger, dir: &Path) -> Result<Statement, LedgerError> {
    let report = ledger.verify(None)?;
    if !report.ok {
        return Err(LedgerError::Broken { problem: report.problem.unwrap_or_default() });
    }
    let mut st = ledger.conn.prepare("SELECT body, hash FROM entries ORDER BY id")?;
    let entries: Vec<StatementEntry> = st.query_map([], |r| Ok(StatementEntry { body: r.get(0)?, hash: r.get(1)? }))?.collect::<Result<_, _>>()?;
    let results = ledger.results()?.into_iter().map(|(charge, result)| StatementResult { charge, result }).collect();
    let s = Statement {
        format: FORMAT.into(),
        dataset: ledger.dataset().to_string(),
        exported_at: super::now(),
        head: report.head.expect("a verified ledger has a head"),
        entries,
        results,
    };
    let io = |p: &Path, e: std::io::Error| LedgerError::Io { path: p.display().to_string(), message: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let json = dir.join("statement.json");
    std::fs::write(&json, serde_json::to_string_pretty(&s).expect("serialises") + "\n").map_err(|e| io(&json, e))?;
    let html = dir.join("index.html");
    std::fs::write(&html, render_html(&s)).map_err(|e| io(&html, e))?;
    Ok(s)
}

/// Verify a statement directory standalone; returns its entries on success.
pub fn verify(dir: &Path, anchor: Option<&Head>) -> Result<(Statement, Vec<Entry>), StatementError> {
    let path = dir.join("statement.json");
    let text = std::fs::read_to_string(&path).map_err(|e| StatementError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let s: Statement = serde_json::from_str(&text).map_err(|e| StatementError::Invalid(format!("statement.json is not a dpq statement ({e})")))?;
    if s.format != FORMAT {
        return Err(StatementError::Invalid(format!("unknown format `{}`", s.format)));
    }
    let mut prev: Option<Entry> = None;
    let mut entries = Vec::new();
    let mut by_analyst: std::collections::HashMap<String, crate::privacy::accountant::filter::Totals> = std::collections::HashMap::new();
    for (i, se) in s.entries.iter().enumerate() {
        let parsed: Entry = serde_json::from_str(&se.body).map_err(|e| StatementError::Invalid(format!("entry {} does not read ({e})", i + 1)))?;
        let row = (
            parsed.id,
            parsed.kind.clone(),
            parsed.analyst.clone(),
            parsed.query_key.clone(),
            parsed.charge_id,
            se.body.clone(),
            parsed.prev_hash.clone(),
            se.hash.clone(),
        );
        let e = check_row(row, prev.as_ref()).map_err(|e| StatementError::Invalid(e.to_string()))?;
        if super::is_charge(&e.kind) {
            let want = by_analyst.get(&e.analyst).copied().unwrap_or_default().with(&e.releases);
            by_analyst.insert(e.analyst.clone(), want);
            if e.analyst_total != Some(want) {
                return Err(StatementError::Invalid(format!("entry {}'s analyst totals do not add up (the amounts were edited)", e.id)));
            }
        }
        if i == 0 && e.params.get("dataset").and_then(|d| d.as_str()) != Some(s.dataset.as_str()) {
            return Err(StatementError::Invalid("the genesis entry names another dataset".into()));
        }
        prev = Some(e.clone());
        entries.push(e);
    }
    let last = entries.last().ok_or_else(|| StatementError::Invalid("it has no entries".into()))?;
    if (Head { entries: last.id, hash: last.hash.clone() }) != s.head {
        return Err(StatementError::Invalid(format!("its head {} is not the chain's end {}:{}", s.head, last.id, last.hash)));
    }
    if let Some(a) = anchor {
        match entries.get((a.entries - 1).max(0) as usize) {
            Some(e) if a.entries >= 1 && e.hash == a.hash => {}
            _ => return Err(StatementError::Invalid(format!("it does not contain the published anchor {a}: it was truncated or rewritten"))),
        }
    }
    let mut results: std::collections::HashMap<i64, &str> = std::collections::HashMap::new();
    for r in &s.results {
        if results.insert(r.charge, r.result.as_str()).is_some() {
            return Err(StatementError::Invalid(format!("it lists two results for entry {}", r.charge)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for e in entries.iter().filter(|e| e.kind == "result") {
        let c = e.charge_id.unwrap_or(0);
        if !seen.insert(c) {
            return Err(StatementError::Invalid(format!("entry {c} has two result entries")));
        }
        match results.get(&c) {
            None => return Err(StatementError::Invalid(format!("the result of entry {c} is missing"))),
            Some(t) if Some(result_hash(t)) != e.result_hash => {
                return Err(StatementError::Invalid(format!("the result of entry {c} was edited: it does not match the hash in entry {}", e.id)));
            }
            _ => {}
        }
    }
    if let Some(r) = s.results.iter().find(|r| !seen.contains(&r.charge)) {
        return Err(StatementError::Invalid(format!("a result for entry {} has no result entry", r.charge)));
    }
    // the page people read must say what the verified statement says
    let html = dir.join("index.html");
    match std::fs::read_to_string(&html) {
        Ok(page) if page != render_html(&s) => {
            return Err(StatementError::Invalid("index.html does not match statement.json (the page was edited): only statement.json is the record".into()));
        }
        _ => {}
    }
    Ok((s, entries))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn render_html(s: &Statement) -> String {
    use std::fmt::Write;
    let mut rows = String::new();
    for se in &s.entries {
        let Ok(e) = serde_json::from_str::<Entry>(&se.body) else { continue };
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=t>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            e.id,
            esc(&e.time),
            esc(&super::printable(&e.analyst)),
            esc(&e.kind),
            esc(&super::printable(&e.text)),
            if super::is_charge(&e.kind) { e.epsilon.to_string() } else { String::new() },
            if super::is_charge(&e.kind) { e.delta.to_string() } else { String::new() },
            &se.hash[..16]
        );
    }
    let last = s.entries.last().and_then(|se| serde_json::from_str::<Entry>(&se.body).ok());
    let spent = last
        .as_ref()
        .map(|e| format!("ε={} and δ={} spent of ε={} and δ={} ({})", e.totals.epsilon, e.totals.delta, e.budget.epsilon, e.budget.delta, e.budget.rule))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Privacy ledger of dataset {ds}</title>
<style>body{{font:15px/1.4 system-ui,sans-serif;margin:2em;max-width:70em}}td,th{{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}}td.t{{max-width:36em}}code{{font-size:.85em}}</style>
<h1>Privacy ledger</h1>
<p>Dataset <code>{ds}</code>, exported {at}. {n} entries; {spent}.</p>
<p>Head (publish this): <code>{head}</code></p>
<p>Check it yourself, without the data: <code>dpq verify-statement DIR --anchor {head}</code>. Every entry's hash covers its content and the previous entry's hash; every released result is covered by the hash in its result entry.</p>
<table><tr><th>#</th><th>time</th><th>who</th><th>kind</th><th>what</th><th>ε</th><th>δ</th><th>hash</th></tr>
{rows}</table></html>
",
        ds = esc(&s.dataset),
        at = esc(&s.exported_at),
        n = s.entries.len(),
        head = s.head,
    )
}
