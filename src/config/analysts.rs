//! `analysts.toml`: the dataset's analysts — their quotas (ε, δ under basic
//! composition, inside the dataset's budget, enforced by the ledger in the
//! charging transaction) and, for the gateway, their password verifiers.
//!
//! ```toml
//! [defaults]            # for analysts not listed (optional: no quota)
//! epsilon = "1"
//! delta = "0"
//!
//! [analysts.bob]
//! epsilon = "0.5"
//! delta = "1e-7"
//! ```
//!
//! The file is optional; without it nobody has a quota. A quota limits what one
//! named analyst spends; names given on the command line are self-asserted
//! (the gateway authenticates its analysts), see docs/ledger.md.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::privacy::amount::Amount;

pub const FILE: &str = "analysts.toml";

/// One analyst's entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analyst {
    /// (ε, δ) this analyst may spend in total, if limited.
    pub quota: Option<(Amount, Amount)>,
    /// SCRAM-SHA-256 verifier for the gateway, if any.
    pub scram: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysts {
    pub default_quota: Option<(Amount, Amount)>,
    pub analysts: BTreeMap<String, Analyst>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    epsilon: Option<toml::Value>,
    delta: Option<toml::Value>,
    scram: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    defaults: Option<RawQuota>,
    #[serde(default)]
    analysts: BTreeMap<String, RawQuota>,
}

impl Analysts {
    /// Read `analysts.toml` in `dir`, if it exists.
    pub fn load(dir: &Path) -> Result<Analysts, ConfigError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Analysts::default()),
            Err(e) => return Err(ConfigError::Io { file: path.display().to_string(), source: e }),
        };
        Analysts::parse(&text, FILE)
    }

    pub fn parse(text: &str, file: &str) -> Result<Analysts, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.into(), message: e.to_string() })?;
        let quota = |q: &RawQuota, key: &str| -> Result<Option<(Amount, Amount)>, ConfigError> {
            let e = super::amount(&q.epsilon, &format!("{key}.epsilon"), file)?;
            let d = super::amount(&q.delta, &format!("{key}.delta"), file)?;
            Ok(match (e, d) {
                (None, None) => None,
                (e, d) => Some((e.unwrap_or(Amount::ZERO), d.unwrap_or(Amount::ZERO))),
            })
        };
        let default_quota = match &raw.defaults {
            Some(q) => quota(q, "defaults")?,
            None => None,
        };
        let mut analysts = BTreeMap::new();
        for (name, q) in &raw.analysts {
            analysts.insert(name.clone(), Analyst { quota: quota(q, &format!("analysts.{name}"))?, scram: q.scram.clone() });
        }
        Ok(Analysts { default_quota, analysts })
    }

    /// The quota of `name` (its own, else the default).
    pub fn quota(&self, name: &str) -> Option<(Amount, Amount)> {
        self.analysts.get(name).and_then(|a| a.quota).or(self.default_quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_resolve_per_analyst_then_default() {
        let a = Analysts::parse("[defaults]\nepsilon = 1\n[analysts.bob]\nepsilon = \"0.5\"\ndelta = 1e-7\n[analysts.carol]\nscram = \"x\"\n", "analysts.toml")
            .unwrap();
        assert_eq!(a.quota("bob"), Some(("0.5".parse().unwrap(), "1e-7".parse().unwrap())));
        assert_eq!(a.quota("carol"), Some((Amount::ONE, Amount::ZERO)), "no quota of her own: the default");
        assert_eq!(a.quota("dave"), Some((Amount::ONE, Amount::ZERO)));
        assert_eq!(Analysts::parse("", "analysts.toml").unwrap().quota("x"), None);
        assert!(Analysts::parse("[analysts.x]\nepsilon = -1\n", "analysts.toml").is_err());
        assert!(Analysts::parse("[analysts.x]\nbogus = 1\n", "analysts.toml").is_err());
    }
}
