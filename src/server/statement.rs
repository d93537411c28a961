//! Splitting a request into statements and deciding where each goes.
//!
//! Statements are split on top-level semicolons by the SQL tokenizer (strings
//! and comments are respected), and each keeps its original text: what the
//! analyser sees, and what the ledger records, is what the client sent.

use datafusion::sql::sqlparser::ast::{self, Statement as Ast};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

pub use crate::sqltext::{offset, split};

/// Where a statement goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `SET name = value` (name lower-cased; value unquoted).
    Set {
        name: String,
        value: String,
    },
    /// `RESET name` / `RESET ALL`.
    Reset(String),
    /// Another `SET …` form (time zone, names, transaction): accepted.
    SetOther,
    /// `SHOW name` (lower-cased, words joined by spaces).
    Show(String),
    Begin,
    Commit,
    Rollback,
    /// Accepted and ignored (`DISCARD`, `DEALLOCATE`): the tag to reply.
    Noop(&'static str),
    /// `EXPLAIN q` or `SELECT * FROM dpq_explain('q')`: the query to explain.
    Explain(String),
    /// Only the catalog (or no table at all).
    Catalog,
    /// Everything else: the analyser decides (answers, or refuses with its reason).
    Dp,
}

/// Parse one statement (for classification only; the analyser parses again).
pub fn parse_one(sql: &str) -> Result<Ast, (String, Option<usize>)> {
    let mut parser = Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).map_err(|e| (e.to_string(), None))?;
    match parser.parse_statement() {
        Ok(st) => {
            // the whole text is one statement: trailing words are a syntax error
            // (they must not change where the statement goes)
            let next = parser.peek_token_ref();
            if matches!(next.token, Token::EOF | Token::SemiColon) {
                Ok(st)
            } else {
                let at = next.span.start;
                Err((format!("Expected: end of statement, found: {}", next.token), Some(offset(sql, at.line, at.column))))
            }
        }
        Err(e) => {
            // the position of the token the parser stopped at
            let at = parser.peek_token_ref().span.start;
            Err((e.to_string(), Some(offset(sql, at.line, at.column))))
        }
    }
}

fn object_name(n: &ast::ObjectName) -> Vec<String> {
    n.0.iter().map(|p| p.as_ident().map(|i| i.value.to_lowercase()).unwrap_or_else(|| p.to_string().to_lowercase())).collect()
}

fn literal_text(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// The relations a query names (tables, views, table functions).
fn relations(st: &Ast) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let _ = ast::visit_relations(st, |r| {
        out.push(object_name(r));
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

/// The argument of `dpq_explain('…')` when the query is `SELECT … FROM dpq_explain('…')`.
fn dpq_explain_arg(st: &Ast) -> Option<String> {
    let Ast::Query(q) = st else { return None };
    let ast::SetExpr::Select(sel) = q.body.as_ref() else { return None };
    let [from] = sel.from.as_slice() else { return None };
    let ast::TableFactor::Table { name, args: Some(args), .. } = &from.relation else { return None };
    if object_name(name).last().map(String::as_str) != Some("dpq_explain") {
        return None;
    }
    match args.args.as_slice() {
        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))] => Some(literal_text(e)),
        _ => None,
    }
}

const CATALOG_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// Classify a statement; `tables` are the dataset's table names.
pub fn classify(sql: &str, st: &Ast, tables: &[String]) -> Kind {
    match st {
        Ast::Set(ast::Set::SingleAssignment { variable, values, .. }) => {
            let name = object_name(variable).join(".");
            let value = values.iter().map(literal_text).collect::<Vec<_>>().join(", ");
            Kind::Set { name, value }
        }
        Ast::Set(_) => Kind::SetOther,
        Ast::ShowVariable { variable } => {
            // `SHOW dpq.budget` and `SHOW TRANSACTION ISOLATION LEVEL`: the words as written
            let written = sql.trim().trim_end_matches(';').trim();
            let rest = written.get(4..).unwrap_or("").trim();
            let name = if rest.is_empty() { variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(" ") } else { rest.to_string() };
            Kind::Show(name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase())
        }
        Ast::StartTransaction { .. } => Kind::Begin,
        Ast::Commit { .. } => Kind::Commit,
        Ast::Rollback { savepoint: Some(_), .. } => Kind::Noop("ROLLBACK"),
        Ast::Rollback { .. } => Kind::Rollback,
        Ast::Discard { .. } => Kind::Noop("DISCARD ALL"),
        Ast::Savepoint { .. } => Kind::Noop("SAVEPOINT"),
        Ast::ReleaseSavepoint { .. } => Kind::Noop("RELEASE"),
        Ast::Deallocate { .. } => Kind::Noop("DEALLOCATE"),
        Ast::Explain { statement, .. } => Kind::Explain(statement.to_string()),
        Ast::Query(_) => {
            if let Some(q) = dpq_explain_arg(st) {
                return Kind::Explain(q);
            }
            let rels = relations(st);
            let names_data = rels.iter().any(|r| {
                let last = r.last().map(String::as_str).unwrap_or("");
                let in_catalog_schema = r.len() > 1 && CATALOG_SCHEMAS.contains(&r[r.len() - 2].as_str());
                !in_catalog_schema && tables.iter().any(|t| t.eq_ignore_ascii_case(last))
            });
            let all_catalog = rels.iter().all(|r| {
                let in_catalog_schema = r.len() > 1 && CATALOG_SCHEMAS.contains(&r[r.len() - 2].as_str());
                let pg_name = r.len() == 1 && r[0].starts_with("pg_");
                in_catalog_schema || pg_name
            });
            if !names_data && all_catalog { Kind::Catalog } else { Kind::Dp }
        }
        Ast::Reset(r) => Kind::Reset(r.to_string().trim_start_matches("RESET").trim().to_lowercase()),
        _ => Kind::Dp,
    }
}

/// The `$n` placeholders of a statement: (number, byte range) in order.
pub fn placeholders(sql: &str) -> Result<Vec<(usize, std::ops::Range<usize>)>, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize_with_location().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for t in &tokens {
        if let Token::Placeholder(p) = &t.token
            && let Some(n) = p.strip_prefix('$').and_then(|d| d.parse::<usize>().ok())
        {
            let a = offset(sql, t.span.start.line, t.span.start.column);
            let b = offset(sql, t.span.end.line, t.span.end.column);
            out.push((n, a..b));
        }
    }
    Ok(out)
}

/// Replace each `$n` with `literals[n - 1]`.
pub fn substitute(sql: &str, literals: &[String]) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (n, r) in placeholders(sql)? {
        let lit = literals.get(n.wrapping_sub(1)).ok_or_else(|| format!("there is no parameter ${n} (the statement was given {})", literals.len()))?;
        out.push_str(&sql[at..r.start]);
        out.push_str(lit);
        at = r.end;
    }
    out.push_str(&sql[at..]);
    Ok(out)
}

/// Parameters a statement expects: the highest `$n`.
pub fn parameter_count(sql: &str) -> usize {
    placeholders(sql).map(|p| p.iter().map(|(n, _)| *n).max().unwrap_or(0)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Vec<String> {
        vec!["messages".into(), "users".into(), "emoji_catalog".into()]
    }

    fn kind(sql: &str) -> Kind {
        classify(sql, &parse_one(sql).unwrap(), &tables())
    }

    #[test]
    fn classifies_what_clients_send() {
        assert_eq!(kind("SET dpq.epsilon = 0.1"), Kind::Set { name: "dpq.epsilon".into(), value: "0.1".into() });
        assert_eq!(kind("SET dpq.mechanism TO 'gaussian'"), Kind::Set { name: "dpq.mechanism".into(), value: "gaussian".into() });
        assert_eq!(kind("SET extra_float_digits = 3"), Kind::Set { name: "extra_float_digits".into(), value: "3".into() });
        assert_eq!(kind("SHOW dpq.budget"), Kind::Show("dpq.budget".into()));
        assert_eq!(kind("SHOW TRANSACTION ISOLATION LEVEL"), Kind::Show("transaction isolation level".into()));
        assert_eq!(kind("BEGIN"), Kind::Begin);
        assert_eq!(kind("COMMIT"), Kind::Commit);
        assert_eq!(kind("ROLLBACK"), Kind::Rollback);
        assert_eq!(kind("SAVEPOINT _pg3_1"), Kind::Noop("SAVEPOINT"));
        assert_eq!(kind("RELEASE SAVEPOINT _pg3_1"), Kind::Noop("RELEASE"));
        assert_eq!(kind("ROLLBACK TO SAVEPOINT _pg3_1"), Kind::Noop("ROLLBACK"));
        assert_eq!(kind("SELECT * FROM dpq_explain('SELECT COUNT(*) FROM messages')"), Kind::Explain("SELECT COUNT(*) FROM messages".into()));
        assert!(matches!(kind("EXPLAIN SELECT COUNT(*) FROM messages"), Kind::Explain(_)));
        assert_eq!(kind("SELECT version()"), Kind::Catalog);
        assert_eq!(kind("SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"), Kind::Catalog);
        assert_eq!(kind("SELECT table_name FROM information_schema.tables"), Kind::Catalog);
        // anything that names the dataset's tables goes to the analyser
        assert_eq!(kind("SELECT COUNT(*) FROM messages"), Kind::Dp);
        assert_eq!(kind("SELECT * FROM pg_catalog.pg_class, messages"), Kind::Dp);
        assert_eq!(kind("SELECT (SELECT COUNT(*) FROM MESSAGES) FROM pg_class"), Kind::Dp);
        assert_eq!(kind("SELECT * FROM public.users"), Kind::Dp);
        assert_eq!(kind("WITH m AS (SELECT * FROM messages) SELECT * FROM pg_class"), Kind::Dp);
        assert_eq!(kind("DELETE FROM messages"), Kind::Dp);
        assert_eq!(kind("SELECT * FROM some_other_table"), Kind::Dp, "unknown tables: the analyser says so");
    }

    #[test]
    fn placeholders_are_substituted_outside_strings() {
        let sql = "SELECT '$1', $1 + $2 FROM t WHERE x = $1 -- $2";
        assert_eq!(parameter_count(sql), 2);
        assert_eq!(substitute(sql, &["7".into(), "'a'".into()]).unwrap(), "SELECT '$1', 7 + 'a' FROM t WHERE x = 7 -- $2");
        assert!(substitute("SELECT $3", &["1".into()]).is_err());
        assert_eq!(offset("ab\ncdé\nf", 3, 1), 8);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        // `FORM` parses as an alias: the words after it are the error
        let (msg, pos) = parse_one("SELECT COUNT(*) FORM messages").unwrap_err();
        assert!(msg.contains("end of statement"), "{msg}");
        assert_eq!(pos, Some(21));
        // `GROUP` without `BY` ends the query: `GROUP` is the first unparsed word
        let (msg, pos) = parse_one("SELECT COUNT(*) FROM messages GROUP chat_kind").unwrap_err();
        assert!(msg.contains("GROUP"), "{msg}");
        assert_eq!(pos, Some(30));
    }
}
