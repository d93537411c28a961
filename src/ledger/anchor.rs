//! The ledger's second place: `ledger.anchor` beside `ledger.db`, and the
//! writers' lock `ledger.lock`.
//!
//! The anchor records the chain's head (entry count and hash) outside the
//! database. Every append writes it twice under the writers' lock: before the
//! SQLite commit as `pending` (the head about to be committed) and after it as
//! `committed`. A crash between the two leaves a pending head that the next
//! writer resolves. A reader accepts the chain only when its head is the
//! anchor's committed or pending head, so deleting the last entries — even
//! with the database's own `head` record edited to match — is detected.
//!
//! What the anchor cannot do: someone who can write both files can rewrite
//! both consistently (or roll both back to an older copy). Against that, the
//! head is meant to be published (`dpq budget --anchor`) and checked later
//! (`dpq budget --verify --anchor N:HASH`); see docs/ledger.md.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A chain head: how many entries, and the last entry's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub entries: i64,
    pub hash: String,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.entries, self.hash)
    }
}

impl std::str::FromStr for Head {
    type Err = String;
    fn from_str(s: &str) -> Result<Head, String> {
        let (n, h) = s.split_once(':').ok_or_else(|| format!("`{s}` is not an anchor; write it as ENTRIES:HASH (as `dpq budget --anchor` prints it)"))?;
        let entries = n.trim().parse().map_err(|_| format!("`{n}` is not an entry count"))?;
        let hash = h.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{h}` is not a SHA-256 hash (64 hex digits)"));
        }
        Ok(Head { entries, hash })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub format: String,
    pub dataset: String,
    pub committed: Head,
    pub pending: Option<Head>,
    /// The head up to which the chain was last verified (incremental
    /// verification starts after it). Kept here, not in the database, so that
    /// editing the database cannot move it.
    #[serde(default)]
    pub verified: Option<Head>,
    /// Set when a verification failed: the ledger admits nothing until it is
    /// restored from a backup (a sticky fail-closed state).
    #[serde(default)]
    pub broken: Option<String>,
}

pub const FORMAT: &str = "dpq-anchor-1";

pub fn path(ledger: &Path) -> PathBuf {
    ledger.with_file_name("ledger.anchor")
}

/// Read the anchor; `Ok(None)` when the file does not exist.
pub fn read(ledger: &Path) -> Result<Option<Anchor>, String> {
    let p = path(ledger);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| format!("{} is unreadable ({e})", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// Write the anchor atomically (temporary file, fsync, rename, fsync the directory).
pub fn write(ledger: &Path, a: &Anchor) -> std::io::Result<()> {
    let p = path(ledger);
    let tmp = p.with_extension("anchor.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(a).expect("anchor serialises").as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &p)?;
    if let Some(dir) = p.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The writers' lock: held from before a transaction begins until the anchor
/// records its commit. Readers take it shared, so that they see the database
/// and the anchor of the same commit. Released when dropped.
pub struct WriteLock(File);

pub fn lock(ledger: &Path) -> std::io::Result<WriteLock> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(ledger.with_file_name("ledger.lock"))?;
    f.lock()?;
    Ok(WriteLock(f))
}

pub fn lock_shared(ledger: &Path) -> std::io::Result<WriteLock> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(ledger.with_file_name("ledger.lock"))?;
    f.lock_shared()?;
    Ok(WriteLock(f))
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
