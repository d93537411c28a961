//! SQL as text, for the places a person types it (the CLI, `dpq shell`, the
//! gateway): splitting a request into statements, pointing at a position
//! with a caret, suggesting the name that was meant, and the statements that
//! describe the public configuration (`SHOW TABLES`, `DESCRIBE t`).
//!
//! Statements are split on top-level semicolons by the SQL tokenizer (strings,
//! quoted identifiers and comments are respected), and each keeps its original
//! text: what the analyser sees, and what the ledger records, is what was typed.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

/// Byte offset of a 1-based (line, column-in-chars) location.
pub fn offset(text: &str, line: u64, column: u64) -> usize {
    let mut l = 1u64;
    let mut start = 0usize;
    if line > 1 {
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                l += 1;
                if l == line {
                    start = i + 1;
                    break;
                }
            }
        }
        if l != line {
            return text.len();
        }
    }
    text[start..].char_indices().nth(column.saturating_sub(1) as usize).map(|(i, _)| start + i).unwrap_or(text.len())
}

/// The statements of a request, as text slices (empty ones dropped).
pub fn split(sql: &str) -> Result<Vec<String>, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut from = 0usize;
    for t in &tokens {
        if t.token == Token::SemiColon {
            let at = offset(sql, t.span.start.line, t.span.start.column);
            out.push(sql[from..at].to_string());
            from = at + 1;
        }
    }
    out.push(sql[from.min(sql.len())..].to_string());
    Ok(out.into_iter().filter(|s| !is_blank(s)).collect())
}

/// Only whitespace and comments.
pub fn is_blank(sql: &str) -> bool {
    match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
        Ok(tokens) => tokens.iter().all(|t| matches!(t, Token::Whitespace(_) | Token::SemiColon | Token::EOF)),
        Err(_) => false,
    }
}

/// Whether `sql` ends a statement: its last token (comments and whitespace
/// aside) is a semicolon outside strings and comments. A shell reads more
/// lines until then.
pub fn is_complete(sql: &str) -> bool {
    match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
        Ok(tokens) => tokens.iter().rev().find(|t| !matches!(t, Token::Whitespace(_) | Token::EOF)).is_some_and(|t| *t == Token::SemiColon),
        // an unterminated string or comment: not complete yet
        Err(_) => false,
    }
}

/// The line of `sql` holding 1-based (`line`, `column`), with a caret under
/// that column, indented by two spaces:
///
/// ```text
///   SELECT COUNT(*) FORM messages
///                        ^
/// ```
pub fn caret(sql: &str, line: u64, column: u64) -> String {
    let text = sql.lines().nth(line.saturating_sub(1) as usize).unwrap_or("");
    let col = (column.max(1) - 1) as usize;
    let pad: String = text.chars().take(col).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    format!("  {text}\n  {pad}^")
}

/// Edit distance over chars, case-insensitive, counting a swap of two
/// neighbouring letters as one edit (`FORM` is one edit from `FROM`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if it is close enough to be what was
/// meant (at most a third of its letters off, at least one), or if `word` is
/// a prefix of exactly one of them.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    // ties go to a candidate the word begins (`WHER` is `WHERE`, not `WHEN`),
    // then to one at least as long as the word (a letter left out is the
    // commoner slip: `cont` is `count` rather than `cot`), then by name
    let mut best: Option<(usize, bool, bool, &str)> = None;
    let mut prefixed = Vec::new();
    let lw = word.to_lowercase();
    for c in candidates {
        if c.eq_ignore_ascii_case(word) {
            continue;
        }
        if word.len() >= 3 && c.to_lowercase().starts_with(&lw) {
            prefixed.push(c);
        }
        let d = distance(word, c);
        let not_prefix = !c.to_lowercase().starts_with(&lw);
        let shorter = c.chars().count() < word.chars().count();
        if best.is_none_or(|b| (d, not_prefix, shorter, c) < b) {
            best = Some((d, not_prefix, shorter, c));
        }
    }
    let limit = (word.chars().count() / 3).max(1);
    match best {
        Some((d, _, _, c)) if d <= limit => Some(c.to_string()),
        _ if prefixed.len() == 1 => Some(prefixed[0].to_string()),
        _ => None,
    }
}

/// A statement that describes the public configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `SHOW TABLES`
    Tables,
    /// `DESCRIBE t`, `DESC t`, `SHOW COLUMNS FROM t`
    Describe(String),
}

/// `SHOW TABLES`, `DESCRIBE t`, `DESC t`, `SHOW COLUMNS FROM t` (any case,
/// an optional trailing semicolon), or None.
pub fn discovery(sql: &str) -> Option<Discovery> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let words: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon | Token::EOF)).collect();
    let word = |t: &Token| match t {
        Token::Word(Word { value, quote_style: None, keyword }) => Some((value.to_lowercase(), *keyword)),
        _ => None,
    };
    let name = |t: &Token| match t {
        Token::Word(Word { value, quote_style: None, .. }) => Some(value.to_lowercase()),
        Token::Word(Word { value, quote_style: Some(_), .. }) => Some(value.clone()),
        _ => None,
    };
    let w: Vec<Option<(String, Keyword)>> = words.iter().map(|t| word(t)).collect();
    let kw = |i: usize, k: &str| w.get(i).and_then(|x| x.as_ref()).is_some_and(|(v, _)| v == k);
    match words.len() {
        2 if kw(0, "show") && kw(1, "tables") => Some(Discovery::Tables),
        2 if kw(0, "describe") || kw(0, "desc") => name(words[1]).map(Discovery::Describe),
        4 if kw(0, "show") && kw(1, "columns") && (kw(2, "from") || kw(2, "in")) => name(words[3]).map(Discovery::Describe),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let s = split("SELECT ';' AS a; -- c;\n SELECT 2 /* ; */;;  ").unwrap();
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(split(" ; -- x\n").unwrap().is_empty());
        assert_eq!(split("SELECT 'é'; SELECT 1").unwrap(), vec!["SELECT 'é'".to_string(), " SELECT 1".to_string()]);
        assert_eq!(offset("ab\ncdé\nf", 3, 1), 8);
    }

    #[test]
    fn completeness_waits_for_a_semicolon_outside_strings_and_comments() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete("SELECT 1; -- done\n"));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';"));
        assert!(!is_complete("SELECT 1 /* ; "));
        assert!(!is_complete("SELECT 1 -- ;"));
        assert!(is_complete("SELECT 1\n  FROM t\n;"));
    }

    #[test]
    fn caret_points_at_the_column() {
        assert_eq!(caret("SELECT COUNT(*) FORM messages", 1, 22), "  SELECT COUNT(*) FORM messages\n                       ^");
        assert_eq!(caret("SELECT 1\nFROM x y z", 2, 8), "  FROM x y z\n         ^");
    }

    #[test]
    fn suggestions_are_close_or_unique_prefixes() {
        let tables = ["messages", "users", "calls", "payments", "emoji_catalog"];
        assert_eq!(did_you_mean("mesages", tables).as_deref(), Some("messages"));
        assert_eq!(did_you_mean("MESSAGE", tables).as_deref(), Some("messages"));
        assert_eq!(did_you_mean("user", tables).as_deref(), Some("users"));
        assert_eq!(did_you_mean("emoji", tables).as_deref(), Some("emoji_catalog"));
        assert_eq!(did_you_mean("zebra", tables), None);
        assert_eq!(did_you_mean("cont", ["count", "cot", "sum"]).as_deref(), Some("count"), "a left-out letter first");
        assert_eq!(did_you_mean("cont", ["count", "sum", "avg"]).as_deref(), Some("count"));
        assert_eq!(did_you_mean("WHER", ["WHEN", "WHERE", "FROM"]).as_deref(), Some("WHERE"));
        assert_eq!(did_you_mean("FORM", ["WHEN", "WHERE", "FROM"]).as_deref(), Some("FROM"), "a swap is one edit");
    }

    #[test]
    fn discovery_statements() {
        assert_eq!(discovery("SHOW TABLES"), Some(Discovery::Tables));
        assert_eq!(discovery("show tables;"), Some(Discovery::Tables));
        assert_eq!(discovery("DESCRIBE messages"), Some(Discovery::Describe("messages".into())));
        assert_eq!(discovery("desc Messages;"), Some(Discovery::Describe("messages".into())));
        assert_eq!(discovery("SHOW COLUMNS FROM users"), Some(Discovery::Describe("users".into())));
        assert_eq!(discovery("SELECT 1"), None);
        assert_eq!(discovery("SHOW dpq.budget"), None);
    }
}

/// DataFusion's debug notation for literals and types, as SQL: `Utf8("year")`
/// → `'year'`, `Int64(100)` → `100`, `Boolean(true)` → `true`, `Int64(NULL)`
/// → `NULL`, `CAST(x AS Int64)` → `CAST(x AS BIGINT)`. Every refusal, error
/// and displayed expression passes through it, so a suggested fix is SQL the
/// user can paste. (Expressions print with DataFusion's `Display`, which
/// shows literals with their Arrow type.)
pub fn sql_notation(text: &str) -> String {
    // COUNT(*) displays as count(Int64(1))
    let text = &text.replace("count(Int64(1))", "count(*)");
    // longest names first, so `Utf8View(` is not taken for `Utf8(`
    const LITERALS: &[&str] = &[
        "TimestampMicrosecond",
        "TimestampMillisecond",
        "TimestampNanosecond",
        "TimestampSecond",
        "LargeUtf8",
        "Utf8View",
        "Float16",
        "Float32",
        "Float64",
        "Boolean",
        "Date32",
        "Date64",
        "UInt16",
        "UInt32",
        "UInt64",
        "UInt8",
        "Int16",
        "Int32",
        "Int64",
        "Int8",
        "Utf8",
    ];
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let hit = if boundary { LITERALS.iter().find(|n| text[i..].starts_with(*n) && text[i + n.len()..].starts_with('(')) } else { None };
        if let Some(name) = hit {
            let open = i + name.len();
            if let Some(close) = matching_paren(text, open) {
                let inner = &text[open + 1..close];
                if let Some(sql) = literal_sql(name, inner) {
                    out.push_str(&sql);
                    i = close + 1;
                    continue;
                }
            }
        }
        // ` AS <arrow type>)` inside CAST / TRY_CAST
        if text[i..].starts_with(" AS ") {
            let rest = &text[i + 4..];
            if let Some((arrow, sql)) = CAST_TYPES.iter().find(|(a, _)| rest.starts_with(a) && rest[a.len()..].starts_with(')')) {
                out.push_str(" AS ");
                out.push_str(sql);
                i += 4 + arrow.len();
                continue;
            }
            if rest.starts_with("Timestamp(")
                && let Some(close) = matching_paren(rest, "Timestamp".len())
                && rest[close + 1..].starts_with(')')
            {
                let tz = rest[..close].contains("Some(") || rest[..close].contains("\"+") || rest[..close].contains("UTC");
                out.push_str(if tz { " AS TIMESTAMPTZ" } else { " AS TIMESTAMP" });
                i += 4 + close + 1;
                continue;
            }
        }
        let ch = text[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

const CAST_TYPES: &[(&str, &str)] = &[
    ("LargeUtf8", "VARCHAR"),
    ("Utf8View", "VARCHAR"),
    ("Utf8", "VARCHAR"),
    ("Float64", "DOUBLE"),
    ("Float32", "REAL"),
    ("Boolean", "BOOLEAN"),
    ("Date32", "DATE"),
    ("UInt64", "BIGINT UNSIGNED"),
    ("UInt32", "INT UNSIGNED"),
    ("UInt16", "SMALLINT UNSIGNED"),
    ("UInt8", "TINYINT UNSIGNED"),
    ("Int64", "BIGINT"),
    ("Int32", "INT"),
    ("Int16", "SMALLINT"),
    ("Int8", "TINYINT"),
];

/// The index of the `)` closing the `(` at `open`, skipping double-quoted strings.
fn matching_paren(text: &str, open: usize) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(open) != Some(&b'(') {
        return None;
    }
    let (mut depth, mut i, mut in_str) = (0usize, open, false);
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// One literal's SQL, from its type name and its debug content.
fn literal_sql(name: &str, inner: &str) -> Option<String> {
    if inner == "NULL" {
        return Some("NULL".into());
    }
    let unquote = |s: &str| -> Option<String> {
        let s = s.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    other => out.push(other),
                }
            } else {
                out.push(c);
            }
        }
        Some(out)
    };
    match name {
        "Utf8" | "LargeUtf8" | "Utf8View" => Some(format!("'{}'", unquote(inner).unwrap_or_else(|| inner.to_string()).replace('\'', "''"))),
        "Boolean" if inner == "true" || inner == "false" => Some(inner.to_string()),
        "Date32" | "Date64" => Some(format!("DATE '{}'", unquote(inner).unwrap_or_else(|| inner.to_string()))),
        n if n.starts_with("Timestamp") => {
            let (value, _tz) = inner.split_once(", ").unwrap_or((inner, ""));
            let v: i64 = value.trim().parse().ok()?;
            let micros = match n {
                "TimestampSecond" => v.checked_mul(1_000_000)?,
                "TimestampMillisecond" => v.checked_mul(1_000)?,
                "TimestampMicrosecond" => v,
                _ => v / 1_000,
            };
            let t = chrono::DateTime::from_timestamp_micros(micros)?;
            Some(format!("TIMESTAMP '{}'", t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f")))
        }
        _ => {
            // numbers: the content is the number
            let t = inner.trim();
            if t.parse::<f64>().is_ok() || t == "NaN" || t == "inf" || t == "-inf" { Some(t.to_string()) } else { None }
        }
    }
}

#[cfg(test)]
mod notation_tests {
    use super::sql_notation as s;

    #[test]
    fn literals_and_casts_print_as_sql() {
        assert_eq!(s(r#"date_part(Utf8("year"), messages.ts)"#), "date_part('year', messages.ts)");
        assert_eq!(s("messages.length > Int64(100)"), "messages.length > 100");
        assert_eq!(s("count(Int64(1)) FILTER (WHERE messages.length > Int64(10))"), "count(*) FILTER (WHERE messages.length > 10)");
        assert_eq!(s(r#"x = Utf8View("it's")"#), "x = 'it''s'");
        assert_eq!(s(r#"x = Utf8("a \"b\" (c)")"#), r#"x = 'a "b" (c)'"#);
        assert_eq!(s("Boolean(true) AND Int32(NULL) IS NULL"), "true AND NULL IS NULL");
        assert_eq!(s("CAST(messages.length AS Int64) + TRY_CAST(x AS Utf8)"), "CAST(messages.length AS BIGINT) + TRY_CAST(x AS VARCHAR)");
        assert_eq!(s("CAST(x AS Timestamp(µs, \"+00:00\"))"), "CAST(x AS TIMESTAMPTZ)");
        assert_eq!(s("CAST(x AS Timestamp(Microsecond, None))"), "CAST(x AS TIMESTAMP)");
        assert_eq!(s("ts > TimestampMicrosecond(1700000000000000, None)"), "ts > TIMESTAMP '2023-11-14 22:13:20'");
        assert_eq!(s(r#"d = Date32("2024-01-02")"#), "d = DATE '2024-01-02'");
        assert_eq!(s("Float64(0.5) * my_Int64(3)"), "0.5 * my_Int64(3)", "only whole names");
        assert_eq!(s("plain text, no literal"), "plain text, no literal");
    }
}
