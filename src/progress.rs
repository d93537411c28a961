//! Progress of long operations (ingest, generate), reported to whoever runs
//! them: the CLI draws bars on a terminal; the library is silent by default.

/// Receives progress; [`Silent`] ignores it.
pub trait Progress: Send + Sync {
    /// Start a bar of `len` units (bytes when `bytes`), labelled `label`.
    fn start(&self, len: u64, bytes: bool, label: &str) -> Box<dyn Bar>;
}

/// One bar.
pub trait Bar: Send + Sync {
    fn inc(&self, n: u64);
    fn set_position(&self, pos: u64);
    fn finish(&self);
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: u64, _: bool, _: &str) -> Box<dyn Bar> {
        Box::new(Silent)
    }
}

impl Bar for Silent {
    fn inc(&self, _: u64) {}
    fn set_position(&self, _: u64) {}
    fn finish(&self) {}
}

/// The silent reporter, shared.
pub fn silent() -> std::sync::Arc<dyn Progress> {
    std::sync::Arc::new(Silent)
}

impl std::fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}
