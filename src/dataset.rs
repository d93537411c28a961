//! A dataset directory (DESIGN §2): `dpq.toml`, `tables/`, `quarantine/`, `ledger.db`.

use std::path::{Path, PathBuf};

use crate::config::{CONFIG_FILE, Config, ConfigError, TEMPLATE};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{dir} already holds a dataset ({file} exists)\n  hint: dpq init never overwrites; pick a new directory or edit the existing dpq.toml")]
    Exists { dir: String, file: String },
    #[error("cannot create {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// An opened dataset: its directory and validated configuration.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub config: Config,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset, DatasetError> {
        let config = Config::load_dir(dir)?;
        Ok(Dataset { dir: dir.to_path_buf(), config })
    }

    /// Create a new dataset directory with the commented template configuration.
    pub fn init(dir: &Path) -> Result<Dataset, DatasetError> {
        let file = dir.join(CONFIG_FILE);
        if file.exists() || dir.join("ledger.db").exists() || dir.join("tables").exists() {
            return Err(DatasetError::Exists { dir: dir.display().to_string(), file: CONFIG_FILE.into() });
        }
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| DatasetError::Io { path, source }
        };
        for sub in ["tables", "quarantine"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(&dir.join(sub)))?;
        }
        // create_new: never clobber a file that appeared meanwhile
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&file).map_err(io(&file))?;
        f.write_all(TEMPLATE.as_bytes()).map_err(io(&file))?;
        Dataset::open(dir)
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger.db")
    }
}
