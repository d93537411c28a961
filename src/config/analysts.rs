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
            // the name is the login, the ledger's record and the quota's key: one
            // canonical form (a longer name was cut to 64 characters in the
            // ledger and lost its quota: found by the gateway attack)
            if !valid_name(name) {
                return Err(ConfigError::Parse {
                    file: file.into(),
                    message: format!(
                        "analyst name {name:?}: use 1 to 63 letters, digits, `_`, `.`, `-` or `@` (it is also the PostgreSQL user name clients connect as)"
                    ),
                });
            }
            analysts.insert(name.clone(), Analyst { quota: quota(q, &format!("analysts.{name}"))?, scram: q.scram.clone() });
        }
        Ok(Analysts { default_quota, analysts })
    }

    /// Add `name` to analysts.toml in `dir` (creating the file), or replace
    /// its entry when `replace`. The rest of the file, comments included, is
    /// kept as written. `scram` is a verifier (never a password).
    pub fn write_entry(dir: &Path, name: &str, quota: Option<(Amount, Amount)>, scram: &str, replace: bool) -> Result<(), ConfigError> {
        let path = dir.join(FILE);
        let invalid = |message: String| ConfigError::Parse { file: FILE.into(), message };
        if !valid_name(name) {
            return Err(invalid(format!(
                "analyst name {name:?}: use 1 to 63 letters, digits, `_`, `.`, `-` or `@` (it is also the PostgreSQL user name clients connect as)"
            )));
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# dpq analysts: quotas (ε, δ under basic composition, inside the dataset's budget)\n# and SCRAM-SHA-256 verifiers for `dpq serve`. Written by `dpq analyst add`.\n".to_string(),
            Err(e) => return Err(ConfigError::Io { file: path.display().to_string(), source: e }),
        };
        let current = Analysts::parse(&text, FILE)?;
        let exists = current.analysts.contains_key(name);
        if exists && !replace {
            return Err(invalid(format!("analyst `{name}` already exists\n  hint: `dpq analyst add {name} --replace` sets a new password and quota")));
        }
        let mut out = if exists { remove_section(&text, name) } else { text };
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("\n[analysts.{}]\n", toml_key(name)));
        if let Some((e, d)) = quota {
            out.push_str(&format!("epsilon = \"{e}\"\ndelta = \"{d}\"\n"));
        }
        out.push_str(&format!("scram = \"{scram}\"\n"));
        // what we write must read back as intended
        let back = Analysts::parse(&out, FILE)?;
        let entry = back.analysts.get(name).ok_or_else(|| invalid("the new entry does not read back".into()))?;
        if entry.scram.as_deref() != Some(scram) || (quota.is_some() && entry.quota != quota) {
            return Err(invalid("the new entry does not read back".into()));
        }
        let tmp = dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, &out).map_err(|e| ConfigError::Io { file: tmp.display().to_string(), source: e })?;
        #[cfg(unix)]
        {
            // verifiers are not passwords, but there is no reason for others to read them
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
        }
        std::fs::rename(&tmp, &path).map_err(|e| ConfigError::Io { file: path.display().to_string(), source: e })
    }

    /// The quota of `name` (its own, else the default).
    pub fn quota(&self, name: &str) -> Option<(Amount, Amount)> {
        self.analysts.get(name).and_then(|a| a.quota).or(self.default_quota)
    }
}

/// Analyst names: PostgreSQL user names without quoting surprises.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@'))
}

fn toml_key(name: &str) -> String {
    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') { name.to_string() } else { format!("\"{name}\"") }
}

/// `text` without the `[analysts.NAME]` table (its header to the next header).
fn remove_section(text: &str, name: &str) -> String {
    let headers = [format!("[analysts.{name}]"), format!("[analysts.\"{name}\"]")];
    let mut out = String::new();
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = headers.iter().any(|h| t == h || t.starts_with(&format!("{h} ")) || t.starts_with(&format!("{h}#")));
        }
        if !skipping {
            out.push_str(line);
        }
    }
    out
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
        // names the ledger would record differently are refused
        for bad in [format!("\"{}\"", "a".repeat(66)), "\" \"".into(), "\"al\\nice\"".into(), "\"bob smith\"".into()] {
            let e = Analysts::parse(&format!("[analysts.{bad}]\nepsilon = 1\n"), "analysts.toml").unwrap_err().to_string();
            assert!(e.contains("analyst name"), "{bad}: {e}");
        }
    }

    #[test]
    fn entries_are_added_and_replaced_keeping_the_rest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "# officer's notes\n[defaults]\nepsilon = 1\n\n[analysts.carol]\nepsilon = \"0.2\" # carol\n").unwrap();
        let q = Some(("0.5".parse().unwrap(), Amount::ZERO));
        Analysts::write_entry(d.path(), "bob", q, "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB", false).unwrap();
        let a = Analysts::load(d.path()).unwrap();
        assert_eq!(a.quota("bob"), q);
        assert_eq!(a.analysts["bob"].scram.as_deref(), Some("SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB"));
        assert_eq!(a.quota("carol"), Some(("0.2".parse().unwrap(), Amount::ZERO)));
        assert!(Analysts::write_entry(d.path(), "bob", None, "x", false).is_err(), "no silent overwrite");
        Analysts::write_entry(d.path(), "bob", Some((Amount::ONE, Amount::ZERO)), "y", true).unwrap();
        let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
        assert!(text.contains("# officer's notes") && text.contains("# carol"), "comments kept: {text}");
        assert_eq!(text.matches("[analysts.bob]").count(), 1, "{text}");
        assert_eq!(Analysts::load(d.path()).unwrap().analysts["bob"].scram.as_deref(), Some("y"));
        for bad in ["", "a b", "x\"y", "é", &"a".repeat(64)] {
            assert!(Analysts::write_entry(d.path(), bad, None, "z", false).is_err(), "{bad:?}");
        }
    }
}
