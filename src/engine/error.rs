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

pub fn refused(construct: impl Into<String>, why: impl Into<String>, fix: impl Into<String>) -> EngineError {
    EngineError::Refused { construct: construct.into(), why: why.into(), fix: fix.into() }
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
