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

#[derive(Debug, thiserror::Error)]
pub enum DatasetLedgerError {
    #[error(transparent)]
    Manifest(#[from] crate::storage::manifest::ManifestError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
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

    /// A new dataset with a lifetime budget other than the template's (for
    /// benchmarks and tools; people change budgets with `dpq budget set`).
    pub fn init_with_budget(dir: &Path, epsilon: crate::privacy::amount::Amount, delta: crate::privacy::amount::Amount) -> Result<Dataset, DatasetError> {
        let ds = Dataset::init(dir)?;
        crate::config::write_budget(&ds.config.file, epsilon, delta)?;
        Dataset::open(dir)
    }

    /// The dataset's id (creating its ledger if the dataset holds no data yet),
    /// for ingest options.
    pub fn id(&self, analyst: &str) -> Result<String, DatasetLedgerError> {
        Ok(self.ledger(analyst)?.dataset().to_string())
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger.db")
    }

    /// What the ledger is checked against: the tables that hold data (with the
    /// dataset id their manifests record) and dpq.toml's `[budget]`.
    pub fn binding(&self) -> Result<crate::ledger::Binding, crate::storage::manifest::ManifestError> {
        let mut tables = Vec::new();
        for name in self.config.tables.keys() {
            if let Some(m) = crate::storage::manifest::Manifest::load(&self.dir, name)?
                && !m.parts.is_empty()
            {
                tables.push((name.clone(), m.dataset.clone()));
            }
        }
        // tables on disk that dpq.toml no longer declares still hold data
        if let Ok(rd) = std::fs::read_dir(self.dir.join("tables")) {
            for d in rd.flatten() {
                let name = d.file_name().to_string_lossy().to_string();
                if !self.config.tables.contains_key(&name) && d.path().join(crate::storage::manifest::MANIFEST).exists() {
                    tables.push((name, None));
                }
            }
        }
        Ok(crate::ledger::Binding {
            tables,
            config_budget: (self.config.budget.epsilon, self.config.budget.delta),
            config_file: self.config.file.display().to_string(),
            policy: self.config.tables.iter().map(|(n, t)| (n.clone(), (t.public, t.privacy_unit.clone(), t.one_row_per_unit))).collect(),
        })
    }

    /// Open this dataset's ledger (created with its genesis entry when the
    /// dataset holds no data yet) as `analyst`.
    pub fn ledger(&self, analyst: &str) -> Result<crate::ledger::Ledger, DatasetLedgerError> {
        let binding = self.binding()?;
        Ok(crate::ledger::Ledger::open(&self.ledger_path(), &binding, analyst)?)
    }
}
