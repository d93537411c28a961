//! Engine errors. A refusal names the construct, why it is refused and the way
//! out. Errors raised while reading private rows are replaced by a message that
//! carries no data (see [`EngineError::Execution`]).

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("refused: {construct}\n  why: {why}\n  fix: {fix}")]
    Refused { construct: String, why: String, fix: String },
    #[error("{0}")]
    Sql(String),
    #[error(
        "the query failed while reading private rows; details are withheld because they could contain private values\n  hint: this usually means a row function failed on some value; simplify the expressions, or check the query with `dpq explain`"
    )]
    Execution,
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Manifest(#[from] crate::storage::manifest::ManifestError),
    #[error("{0}")]
    Invalid(String),
    #[error("internal error (a bug in dpq): {0}\n  please report it with the command you ran; nothing was released")]
    Internal(String),
    #[error(
        "post-processing of the noisy result failed (a cast, division or function over the released values); its message is withheld because it would show noisy values"
    )]
    PostProcessing,
    #[error(
        "this question's charge (ledger entry {entry}) ended in an error, which is its recorded outcome: {message}\n  noise was drawn for it, so asking again cannot draw new noise for free: running it again replays this failure; change the query, or use --fresh to pay for a new attempt"
    )]
    Failed { entry: i64, message: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A refusal. Its texts are put in SQL notation ([`crate::sqltext::sql_notation`]):
/// expressions print with DataFusion's `Display` (`Utf8("year")`, `Int64(100)`),
/// and a fix must be SQL the user can paste.
pub fn refused(construct: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> EngineError {
    let sql = |s: String| crate::sqltext::sql_notation(&s);
    EngineError::Refused { construct: sql(construct.into()), why: sql(why.into()), fix: sql(fix.into()) }
}

/// A dpq bug: a state its own code should never reach.
pub fn internal(what: impl Into<String>) -> EngineError {
    EngineError::Internal(what.into())
}

/// An error raised after a charge, as it may be shown and recorded: nothing
/// computed from private rows or noise (an engine message could quote a noisy
/// value; see `protocol`).
pub fn after_charge(e: EngineError) -> EngineError {
    match e {
        EngineError::Sql(_) => EngineError::PostProcessing,
        other => other,
    }
}

/// A planning error from DataFusion: it concerns the query text only.
pub fn sql(e: datafusion::error::DataFusionError) -> EngineError {
    let msg = e.strip_backtrace();
    EngineError::Sql(format!("invalid query: {msg}"))
}

/// Aggregates the analyser understands (for "did you mean").
pub const AGGREGATES: &[&str] =
    &["count", "sum", "avg", "median", "percentile_cont", "approx_percentile_cont", "quantile_cont", "stddev", "stddev_pop", "variance", "var_pop", "var_samp"];

/// SQL words a typo in a clause keyword is taken for.
const CLAUSES: &[&str] = &[
    "SELECT", "FROM", "WHERE", "GROUP", "BY", "HAVING", "ORDER", "LIMIT", "JOIN", "ON", "USING", "AS", "AND", "OR", "NOT", "CASE", "WHEN", "THEN", "ELSE",
    "END", "DISTINCT", "WITH", "UNION", "INNER", "LEFT",
];

/// A DataFusion parse or planning error, as a person can act on it: a syntax
/// error shows its line with a caret (and the clause keyword a typo before it
/// was probably meant to be); an unknown table, column or function names the
/// closest one that exists (tables and columns from dpq.toml, functions from
/// what dpq accepts). The text concerns the query only, never the data.
pub fn planning(e: datafusion::error::DataFusionError, text: &str, config: &crate::config::Config) -> EngineError {
    use crate::sqltext::{caret, did_you_mean};
    use datafusion::error::DataFusionError as D;
    use datafusion::sql::sqlparser::parser::ParserError;
    // DataFusion wraps errors (Context, Diagnostic): look at the root
    match e.find_root() {
        D::SQL(pe, _) => {
            let msg = match pe.as_ref() {
                ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
                ParserError::RecursionLimitExceeded => return EngineError::Sql("syntax error: the query nests too deeply".into()),
            };
            let (what, at) = match msg.rsplit_once(" at Line: ") {
                Some((t, loc)) => {
                    let mut parts = loc.split(", Column: ");
                    let line = parts.next().and_then(|l| l.trim().parse::<u64>().ok());
                    let col = parts.next().and_then(|c| c.trim().trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().ok());
                    (t.to_string(), line.zip(col))
                }
                None => (msg.clone(), None),
            };
            let mut out = format!("syntax error: {what}");
            if let Some((line, col)) = at {
                out.push_str(&format!(" (line {line}, column {col})\n{}", caret(text, line, col)));
                // the word before the error: `FORM messages`, `WHER length > 3`
                let upto = &text[..crate::sqltext::offset(text, line, col)];
                if let Some(prev) = upto.split(|c: char| !(c.is_alphanumeric() || c == '_')).rev().find(|w| !w.is_empty())
                    && !CLAUSES.iter().any(|k| k.eq_ignore_ascii_case(prev))
                    && let Some(k) = did_you_mean(prev, CLAUSES.iter().copied())
                {
                    out.push_str(&format!("\n  hint: did you mean {k} instead of `{prev}`?"));
                }
            }
            EngineError::Sql(out)
        }
        D::SchemaError(se, _) => {
            use datafusion::common::SchemaError;
            if let SchemaError::FieldNotFound { field, valid_fields } = se.as_ref() {
                let names: Vec<String> = valid_fields.iter().map(|c| c.name.clone()).collect();
                let mut names_sorted = names.clone();
                names_sorted.sort();
                names_sorted.dedup();
                let hint = match did_you_mean(&field.name, names_sorted.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`? "),
                    None => String::new(),
                };
                let known = if names_sorted.is_empty() { String::new() } else { format!("the columns here are {} (DESCRIBE table)", names_sorted.join(", ")) };
                return EngineError::Sql(format!("unknown column `{}`\n  hint: {hint}{known}", field.name));
            }
            sql(e)
        }
        D::Plan(m) if m.starts_with("table '") && m.ends_with("' not found") => {
            let full = &m["table '".len()..m.len() - "' not found".len()];
            let name = full.rsplit('.').next().unwrap_or(full);
            let tables: Vec<&str> = config.tables.keys().map(String::as_str).collect();
            let hint = match did_you_mean(name, tables.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? "),
                None => String::new(),
            };
            EngineError::Sql(format!("unknown table `{name}`\n  hint: {hint}the tables are {} (SHOW TABLES)", tables.join(", ")))
        }
        D::Plan(m) if m.starts_with("Invalid function '") => {
            let name = m["Invalid function '".len()..].split('\'').next().unwrap_or("");
            let mut known: Vec<&str> = AGGREGATES.to_vec();
            known.extend(crate::engine::analyze::expr::allowed::CONTRACTS.iter().map(|c| c.name));
            let hint = match did_you_mean(name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? "),
                None => String::new(),
            };
            EngineError::Sql(format!(
                "unknown function `{name}`\n  hint: {hint}aggregates: COUNT, SUM, AVG, MEDIAN, PERCENTILE_CONT, STDDEV, VARIANCE; row functions: see docs/sql.md"
            ))
        }
        _ => sql(e),
    }
}
