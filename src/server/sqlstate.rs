//! SQLSTATE codes the gateway returns (documented in docs/gateway.md).
//!
//! | code | when |
//! |---|---|
//! | `42501` | the analyser refused the query (privacy rules); the message says why, the hint how to ask instead |
//! | `53400` | the dataset's budget or the analyst's quota does not cover the query |
//! | `42601` | a syntax error (with its position) |
//! | `42P01` / `42703` | an unknown table / column |
//! | `42000` | another error in the query |
//! | `22023` | a bad value for `SET dpq.…` or a bad parameter |
//! | `42704` | `SHOW` of an unknown parameter |
//! | `0A000` | a statement or a parameter format dpq does not support |
//! | `57014` | the statement timeout |
//! | `28P01` | authentication failed (unknown analyst or wrong password: the same) |
//! | `53300` | too many connections |
//! | `55000` | the ledger cannot be used (verification failed, out of date with dpq.toml) |
//! | `F0000` | dpq.toml or analysts.toml is invalid |
//! | `58000` | the data could not be read, or the query's charge ended in a recorded failure |
//! | `XX000` | a bug in dpq |

use pgwire::error::{ErrorInfo, PgWireError};

use crate::session::Error;

pub const REFUSED: &str = "42501";
pub const BUDGET: &str = "53400";
pub const SYNTAX: &str = "42601";
pub const UNDEFINED_TABLE: &str = "42P01";
pub const UNDEFINED_COLUMN: &str = "42703";
pub const QUERY: &str = "42000";
pub const INVALID_VALUE: &str = "22023";
pub const UNDEFINED_PARAMETER: &str = "42704";
pub const UNSUPPORTED: &str = "0A000";
pub const TIMEOUT: &str = "57014";
pub const AUTH: &str = "28P01";
pub const TOO_MANY: &str = "53300";
pub const LEDGER: &str = "55000";
pub const CONFIG: &str = "F0000";
pub const DATA: &str = "58000";
pub const INTERNAL: &str = "XX000";

/// An ERROR with a code, a message, and optional detail and hint.
pub fn error(code: &str, message: impl Into<String>, detail: Option<String>, hint: Option<String>) -> ErrorInfo {
    let mut e = ErrorInfo::new("ERROR".into(), code.into(), message.into());
    e.detail = detail;
    e.hint = hint;
    e
}

pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message.into())))
}

pub fn user(e: ErrorInfo) -> PgWireError {
    PgWireError::UserError(Box::new(e))
}

/// Split dpq's "message\n  hint: …" texts into the message and a hint.
fn split_hint(text: &str) -> (String, Option<String>) {
    let mut message = Vec::new();
    let mut hints = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(h) = t.strip_prefix("hint:").or_else(|| t.strip_prefix("fix:")) {
            hints.push(h.trim().to_string());
        } else {
            message.push(line.trim_end().to_string());
        }
    }
    (message.join("\n"), if hints.is_empty() { None } else { Some(hints.join("\n")) })
}

/// dpq's error as the client sees it.
pub fn of(e: &Error) -> ErrorInfo {
    match e {
        Error::Refused { construct, why, fix } => error(REFUSED, format!("refused: {construct}"), Some(why.clone()), Some(fix.clone())),
        Error::Query(m) => {
            let lower = m.to_lowercase();
            let code = if lower.contains("sql parser") || lower.contains("parsererror") || lower.contains("expected:") || lower.contains("syntax") {
                SYNTAX
            } else if lower.contains("table") && (lower.contains("not found") || lower.contains("does not exist")) {
                UNDEFINED_TABLE
            } else if (lower.contains("column") || lower.contains("field")) && (lower.contains("not found") || lower.contains("no field named")) {
                UNDEFINED_COLUMN
            } else if lower.contains("epsilon") || lower.contains("delta") || lower.contains("confidence") {
                INVALID_VALUE
            } else {
                QUERY
            };
            let (msg, hint) = split_hint(m);
            error(code, msg, None, hint)
        }
        Error::Budget(m) => {
            let (msg, hint) = split_hint(m);
            error(BUDGET, msg, None, hint)
        }
        Error::Ledger(m) => {
            let (msg, hint) = split_hint(m);
            error(LEDGER, msg, None, hint)
        }
        Error::Config(m) => {
            let (msg, hint) = split_hint(m);
            error(CONFIG, msg, None, hint)
        }
        Error::Data(m) => {
            let (msg, hint) = split_hint(m);
            error(DATA, msg, None, hint)
        }
        Error::Failed { entry, message } => {
            let (msg, hint) = split_hint(message);
            error(DATA, msg, Some(format!("ledger entry {entry}")), hint)
        }
        Error::Internal(m) => {
            error(INTERNAL, format!("internal error (a bug in dpq): {m}"), None, Some("please report it with what you ran; nothing was released".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error kind maps to a documented code (the table above), and
    /// refusals carry their reason and their way out.
    #[test]
    fn every_error_kind_has_its_code() {
        let cases = [
            (Error::Refused { construct: "x".into(), why: "w".into(), fix: "f".into() }, REFUSED),
            (Error::Query("SQL error: ParserError(\"Expected: end of statement\")".into()), SYNTAX),
            (Error::Query("table 'datafusion.public.mesages' not found".into()), UNDEFINED_TABLE),
            (Error::Query("--epsilon must be positive".into()), INVALID_VALUE),
            (Error::Budget("not enough budget\n  hint: h".into()), BUDGET),
            (Error::Ledger("broken".into()), LEDGER),
            (Error::Config("bad".into()), CONFIG),
            (Error::Data("gone".into()), DATA),
            (Error::Failed { entry: 3, message: "failed".into() }, DATA),
            (Error::Internal("bug".into()), INTERNAL),
        ];
        for (e, code) in cases {
            let info = of(&e);
            assert_eq!(info.code, code, "{e:?}");
            assert_eq!(info.severity, "ERROR");
        }
        let r = of(&Error::Refused { construct: "c".into(), why: "w".into(), fix: "f".into() });
        assert_eq!((r.detail.as_deref(), r.hint.as_deref()), (Some("w"), Some("f")));
        let b = of(&Error::Budget("not enough\n  hint: raise it".into()));
        assert_eq!((b.message.as_str(), b.hint.as_deref()), ("not enough", Some("raise it")));
    }
}
