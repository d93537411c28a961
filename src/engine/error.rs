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
    Manifest(#[from] crate::ingest::manifest::ManifestError),
    #[error("{0}")]
    Invalid(String),
    #[error("internal error (a bug in dpq): {0}\n  please report it with the command you ran; nothing was released")]
    Internal(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub fn refused(construct: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> EngineError {
    EngineError::Refused { construct: construct.into(), why: why.into(), fix: fix.into() }
}

/// A dpq bug: a state its own code should never reach.
pub fn internal(what: impl Into<String>) -> EngineError {
    EngineError::Internal(what.into())
}

/// A planning error from DataFusion: it concerns the query text only.
pub fn sql(e: datafusion::error::DataFusionError) -> EngineError {
    let msg = e.strip_backtrace();
    EngineError::Sql(format!("invalid query: {msg}"))
}
