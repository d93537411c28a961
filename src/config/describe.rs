//! Schema discovery from the public configuration: `dpq tables`,
//! `SHOW TABLES`, `DESCRIBE t` (the CLI, `dpq shell`, the gateway). Everything
//! here comes from dpq.toml, which is public: names, declared types, privacy
//! units, bounds and domains. Nothing is read from the data (a row count of a
//! private table would be a private value).

use super::{Config, DomainConfig};

/// Rows to print: headers, then one row per item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// The dataset's tables: name, whether private (and by which unit) or public,
/// and their columns.
pub fn tables(c: &Config) -> Listing {
    let rows = c
        .tables
        .iter()
        .map(|(name, t)| {
            let kind = if t.public {
                "public (answered exactly)".to_string()
            } else {
                let unit = t.privacy_unit.as_deref().unwrap_or("?");
                let one = if t.one_row_per_unit { ", one row per person" } else { "" };
                format!("private, unit {unit}{one}")
            };
            vec![name.clone(), kind, t.columns.keys().cloned().collect::<Vec<_>>().join(", ")]
        })
        .collect();
    Listing { headers: vec!["table".into(), "privacy".into(), "columns".into()], rows }
}

/// A table's columns: declared type, role, bounds and domain. An unknown
/// table is an error that names the closest table and lists them all.
pub fn describe(c: &Config, table: &str) -> Result<Listing, String> {
    let Some((name, t)) = c.tables.iter().find(|(n, _)| n.eq_ignore_ascii_case(table)) else {
        let names: Vec<&str> = c.tables.keys().map(String::as_str).collect();
        let hint = match crate::sqltext::did_you_mean(table, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? "),
            None => String::new(),
        };
        return Err(format!("unknown table `{table}`\n  hint: {hint}the tables are {} (SHOW TABLES)", names.join(", ")));
    };
    let mut rows = Vec::new();
    for (col, cc) in &t.columns {
        let role = if t.privacy_unit.as_deref() == Some(col.as_str()) {
            "privacy unit (never in the output)".to_string()
        } else if t.public {
            "public".to_string()
        } else {
            String::new()
        };
        let bounds = cc.bounds.map(|(lo, hi)| format!("[{}, {}]", number(lo), number(hi))).unwrap_or_default();
        let domain = match &cc.domain {
            None => String::new(),
            Some(DomainConfig::Values(v)) => {
                let shown: Vec<String> = v.iter().take(8).map(|x| x.to_string()).collect();
                let more = if v.len() > 8 { format!(", … ({} values)", v.len()) } else { String::new() };
                format!("{}{more}", shown.join(", "))
            }
            Some(DomainConfig::Table { table, column }) => format!("values of {table}.{column}"),
        };
        rows.push(vec![col.clone(), cc.ty.map(|t| t.name().to_string()).unwrap_or_else(|| "(any)".into()), role, bounds, domain]);
    }
    let _ = name;
    Ok(Listing { headers: vec!["column".into(), "type".into(), "role".into(), "bounds".into(), "domain (GROUP BY keys)".into()], rows })
}

/// A bound as written in dpq.toml: `2000`, `0.5`.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { format!("{x}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        Config::parse(super::super::TEMPLATE, std::path::Path::new("dpq.toml")).unwrap()
    }

    #[test]
    fn tables_list_privacy_and_columns() {
        let l = tables(&demo());
        let messages = l.rows.iter().find(|r| r[0] == "messages").unwrap();
        assert_eq!(messages[1], "private, unit user_id");
        assert!(messages[2].contains("chat_kind") && messages[2].contains("length"), "{messages:?}");
        let catalog = l.rows.iter().find(|r| r[0] == "emoji_catalog").unwrap();
        assert!(catalog[1].starts_with("public"), "{catalog:?}");
    }

    #[test]
    fn describe_shows_types_bounds_domains_and_suggests() {
        let l = describe(&demo(), "Messages").unwrap();
        let length = l.rows.iter().find(|r| r[0] == "length").unwrap();
        assert_eq!(&length[1..4], &["int64".to_string(), String::new(), "[0, 2000]".to_string()]);
        let kind = l.rows.iter().find(|r| r[0] == "chat_kind").unwrap();
        assert_eq!(kind[4], "private, group");
        let emoji = l.rows.iter().find(|r| r[0] == "emoji").unwrap();
        assert_eq!(emoji[4], "values of emoji_catalog.emoji");
        let unit = l.rows.iter().find(|r| r[0] == "user_id").unwrap();
        assert!(unit[2].starts_with("privacy unit"));
        let e = describe(&demo(), "mesages").unwrap_err();
        assert!(e.contains("did you mean `messages`?") && e.contains("SHOW TABLES"), "{e}");
    }
}
