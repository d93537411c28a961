//! A table's manifest (`tables/<table>/manifest.json`): its recorded schema and the
//! list of committed Parquet parts. The manifest is replaced atomically (write to a
//! temporary file, fsync, rename), which is the commit point of an ingest: a part
//! that is not listed is invisible, so a crash mid-ingest leaves nothing partial.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::schema::ColumnType;

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub name: String,
    pub sha256: String,
    pub format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub rejected: u64,
    pub quarantine: Option<String>,
    pub source: SourceInfo,
    pub ingested_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Manifest {
    pub table: String,
    /// The dataset this table was ingested into (its ledger's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    pub schema: Vec<ColumnSpec>,
    pub parts: Vec<Part>,
    pub next_part: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is corrupt ({message})\n  hint: restore it from a backup; dpq never edits it in place, so a damaged copy means an outside edit")]
    Corrupt { path: String, message: String },
    #[error(
        "table `{table}`: part {part} is listed in its manifest but missing on disk\n  hint: restore the file from a backup, or re-ingest the table into a fresh dataset; dpq will not answer from incomplete data"
    )]
    MissingPart { table: String, part: String },
}

pub fn table_dir(data: &Path, table: &str) -> PathBuf {
    data.join("tables").join(table)
}

impl Manifest {
    pub fn path(data: &Path, table: &str) -> PathBuf {
        table_dir(data, table).join(MANIFEST)
    }

    /// The manifest of `table`, or `None` if nothing was ever ingested.
    pub fn load(data: &Path, table: &str) -> Result<Option<Manifest>, ManifestError> {
        let path = Manifest::path(data, table);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ManifestError::Io { path: path.display().to_string(), source }),
        };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| ManifestError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
        Ok(Some(m))
    }

    /// Atomically replace the manifest on disk.
    pub fn save(&self, data: &Path) -> Result<(), ManifestError> {
        let dir = table_dir(data, &self.table);
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!(".{MANIFEST}.tmp"));
        let io = |source| ManifestError::Io { path: path.display().to_string(), source };
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io)?;
        sync_dir(&dir).map_err(io)?;
        Ok(())
    }

    /// Absolute paths of the committed parts, checking that each exists.
    pub fn part_paths(&self, data: &Path) -> Result<Vec<PathBuf>, ManifestError> {
        let dir = table_dir(data, &self.table);
        self.parts
            .iter()
            .map(|p| {
                let path = dir.join(&p.file);
                if path.exists() { Ok(path) } else { Err(ManifestError::MissingPart { table: self.table.clone(), part: p.file.clone() }) }
            })
            .collect()
    }

    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// A hash identifying this table's data: changes whenever a part is added.
    pub fn version(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.table.as_bytes());
        for c in &self.schema {
            h.update(c.name.as_bytes());
            h.update(c.ty.name().as_bytes());
        }
        for p in &self.parts {
            h.update(p.file.as_bytes());
            h.update(p.sha256.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// An exclusive lock on one table's directory, held for the length of an ingest.
pub struct TableLock {
    _file: File,
}

impl TableLock {
    pub fn acquire(data: &Path, table: &str) -> std::io::Result<TableLock> {
        let dir = table_dir(data, table);
        fs::create_dir_all(&dir)?;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(".lock"))?;
        file.lock()?;
        Ok(TableLock { _file: file })
    }
}
