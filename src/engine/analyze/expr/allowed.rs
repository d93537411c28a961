//! Rule: which expressions may be evaluated over private rows.
//!
//! Accepted: columns, literals, aliases, boolean logic (`AND`/`OR`/`NOT`,
//! `IS [NOT] NULL/TRUE/FALSE/UNKNOWN`), comparisons, `BETWEEN`, `CASE`, casts,
//! `IN` lists of literals, `LIKE`/`ILIKE`/`SIMILAR TO` with a literal pattern that
//! compiles, the arithmetic, bitwise and string operators of [`OPERATORS`], and
//! the scalar functions of the contract table [`CONTRACTS`]. Everything else is
//! refused before any private row is read, with the construct named.
//!
//! Why a table and not "any function DataFusion has": a function is admitted
//! when three things are known about it, and the table is where they are
//! written down —
//! 1. *it cannot fail for any input*: every admitted function is evaluated under
//!    the totality wrapper (or rewritten into `CASE`), see [`super::total`];
//! 2. *its resources are bounded by its input*: no function whose output can be
//!    much larger than its arguments unless that argument is a literal
//!    (`repeat`, `lpad` are not admitted; `replace` takes literal patterns);
//! 3. *it is deterministic*: `random()` and `uuid()` would make bounding
//!    unverifiable and answers irreproducible.
//!
//! The totality harness (`harness.rs`) evaluates every entry of the table, in
//! every argument position, over adversarial values; an entry without harness
//! signatures fails the harness.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, Operator};

use super::super::super::error::{EngineError, Result, refused};
use super::is_literal;

/// How a function of the table is made total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Totality {
    /// Evaluated under [`crate::engine::total::TotalFn`]: a failing row is NULL.
    Wrapped,
    /// Rewritten into `CASE` over its arguments (which are made total).
    Case,
    /// Takes no argument (folded to a constant by the planner).
    Constant,
    /// `clamp(x, lo, hi)`: rewritten into `CASE`/`least`/`greatest` on Float64.
    Builtin,
}

/// The type families the totality harness evaluates an argument position with.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(not(test), allow(dead_code))] // read by the totality harness
pub enum H {
    /// Utf8, LargeUtf8, Utf8View
    Str,
    /// every integer width, signed and unsigned
    Int,
    /// Float32, Float64
    Float,
    /// Int ∪ Float ∪ Decimal128
    Num,
    /// timestamps of every unit (with and without a time zone) and dates
    Time,
    /// Date32, Date64
    #[allow(dead_code)] // for contracts over dates (none yet)
    Date,
    /// interval types
    Interval,
    #[allow(dead_code)] // for contracts over booleans (none yet)
    Bool,
    /// one of each family
    Any,
    /// a literal string, one harness case per value
    LitStr(&'static [&'static str]),
    /// a literal integer, one harness case per value
    LitInt(&'static [i64]),
    /// a literal interval given as SQL text (e.g. `INTERVAL '1 hour'`)
    LitInterval(&'static [&'static str]),
}

/// One admitted function.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// DataFusion's canonical name (aliases resolve to it during planning).
    pub name: &'static str,
    pub totality: Totality,
    /// Argument positions that must be literals, and why.
    pub literal: &'static [usize],
    pub literal_why: &'static str,
    /// Signatures the harness evaluates (one list of argument families each).
    #[cfg_attr(not(test), allow(dead_code))]
    pub harness: &'static [&'static [H]],
}

const FIELDS: H = H::LitStr(&["hour", "year", "month", "dow", "epoch", "second", "nanosecond", "bogus", ""]);
const UNITS: H = H::LitStr(&["hour", "day", "month", "year", "week", "quarter", "second", "millisecond", "bogus", ""]);
const FORMATS: H = H::LitStr(&["%Y-%m-%d", "%H", "%Q %%", ""]);
const PATTERNS: H = H::LitStr(&["a", "", "(", "^x.*$", "\\"]);
const SEPS: H = H::LitStr(&[",", "", "-"]);
const W: Totality = Totality::Wrapped;

macro_rules! c {
    ($name:expr, $t:expr, [$($sig:expr),* $(,)?]) => {
        Contract { name: $name, totality: $t, literal: &[], literal_why: "", harness: &[$($sig),*] }
    };
    ($name:expr, $t:expr, literal $lits:expr, $why:expr, [$($sig:expr),* $(,)?]) => {
        Contract { name: $name, totality: $t, literal: $lits, literal_why: $why, harness: &[$($sig),*] }
    };
}

const SIZE: &str = "the output could grow far beyond the input otherwise, so memory use would depend on private values";
const TIME: &str = "its cost grows with the product of its arguments' lengths, so one person's long value could stall the query";
const TRIMS: H = H::LitStr(&[" ", "ab", "", "é🙂"]);
const UNIT_LIT: &str = "the unit decides the key's domain; write it as a literal, e.g. date_trunc('month', ts)";

/// The scalar functions dpq evaluates over private rows.
pub const CONTRACTS: &[Contract] = &[
    // date and time
    c!("date_part", W, literal & [0], UNIT_LIT, [&[FIELDS, H::Time], &[FIELDS, H::Interval]]),
    c!("date_trunc", W, literal & [0], UNIT_LIT, [&[UNITS, H::Time]]),
    c!(
        "date_bin",
        W,
        literal & [0],
        "the stride decides the key's domain; write it as a literal interval",
        [
            &[H::LitInterval(&["INTERVAL '1 hour'", "INTERVAL '15 minutes'", "INTERVAL '1 month'", "INTERVAL '0 seconds'"]), H::Time],
            &[H::LitInterval(&["INTERVAL '1 day'"]), H::Time, H::Time],
        ]
    ),
    c!("to_timestamp", W, [&[H::Str], &[H::Int], &[H::Float], &[H::Str, FORMATS]]),
    c!("to_timestamp_seconds", W, [&[H::Str], &[H::Int]]),
    c!("to_timestamp_millis", W, [&[H::Str], &[H::Int]]),
    c!("to_timestamp_micros", W, [&[H::Str], &[H::Int]]),
    c!("to_timestamp_nanos", W, [&[H::Str], &[H::Int]]),
    c!("to_date", W, [&[H::Str], &[H::Int], &[H::Str, FORMATS]]),
    c!("to_unixtime", W, [&[H::Time], &[H::Str]]),
    c!("from_unixtime", W, [&[H::Int]]),
    c!("make_date", W, [&[H::Int, H::Int, H::Int]]),
    c!("to_char", W, literal & [1], "a format built from private values has no bounded output", [&[H::Time, FORMATS]]),
    c!("now", Totality::Constant, [&[]]),
    c!("current_date", Totality::Constant, [&[]]),
    c!("current_time", Totality::Constant, [&[]]),
    // strings
    c!("lower", W, [&[H::Str]]),
    c!("upper", W, [&[H::Str]]),
    c!("initcap", W, [&[H::Str]]),
    c!("reverse", W, [&[H::Str]]),
    c!("ascii", W, [&[H::Str]]),
    c!("character_length", W, [&[H::Str]]),
    c!("octet_length", W, [&[H::Str]]),
    c!("bit_length", W, [&[H::Str]]),
    c!("substr", W, [&[H::Str, H::Int], &[H::Str, H::Int, H::Int]]),
    c!("btrim", W, literal & [1], TIME, [&[H::Str], &[H::Str, TRIMS]]),
    c!("ltrim", W, literal & [1], TIME, [&[H::Str], &[H::Str, TRIMS]]),
    c!("rtrim", W, literal & [1], TIME, [&[H::Str], &[H::Str, TRIMS]]),
    c!("concat", W, [&[H::Str, H::Str], &[H::Any, H::Str, H::Int]]),
    c!("concat_ws", W, [&[SEPS, H::Str, H::Str]]),
    c!("starts_with", W, [&[H::Str, H::Str]]),
    c!("ends_with", W, [&[H::Str, H::Str]]),
    c!("strpos", W, [&[H::Str, H::Str]]),
    c!("left", W, [&[H::Str, H::Int]]),
    c!("right", W, [&[H::Str, H::Int]]),
    c!("replace", W, literal & [1, 2], SIZE, [&[H::Str, H::LitStr(&["a", "", "é"]), H::LitStr(&["bb", ""])]]),
    c!("translate", W, literal & [1, 2], TIME, [&[H::Str, H::LitStr(&["ab", "", "é"]), H::LitStr(&["x", "xyz", ""])]]),
    c!("split_part", W, literal & [1], SIZE, [&[H::Str, SEPS, H::Int]]),
    c!("to_hex", W, [&[H::Int]]),
    c!("chr", W, [&[H::Int]]),
    c!("regexp_like", W, literal & [1], "a pattern built from private values could fail to compile", [&[H::Str, PATTERNS]]),
    c!("regexp_replace", W, literal & [1, 2], SIZE, [&[H::Str, PATTERNS, H::LitStr(&["x", ""])]]),
    // numbers
    c!("abs", W, [&[H::Num]]),
    c!("floor", W, [&[H::Num]]),
    c!("ceil", W, [&[H::Num]]),
    c!("round", W, [&[H::Num], &[H::Num, H::Int]]),
    c!("trunc", W, [&[H::Num], &[H::Num, H::Int]]),
    c!("signum", W, [&[H::Num]]),
    c!("sqrt", W, [&[H::Num]]),
    c!("cbrt", W, [&[H::Num]]),
    c!("exp", W, [&[H::Num]]),
    c!("ln", W, [&[H::Num]]),
    c!("log", W, [&[H::Num], &[H::Num, H::Num]]),
    c!("log2", W, [&[H::Num]]),
    c!("log10", W, [&[H::Num]]),
    c!("power", W, [&[H::Num, H::Num]]),
    c!("sin", W, [&[H::Num]]),
    c!("cos", W, [&[H::Num]]),
    c!("tan", W, [&[H::Num]]),
    c!("asin", W, [&[H::Num]]),
    c!("acos", W, [&[H::Num]]),
    c!("atan", W, [&[H::Num]]),
    c!("atan2", W, [&[H::Float, H::Float]]),
    c!("degrees", W, [&[H::Num]]),
    c!("radians", W, [&[H::Num]]),
    c!("gcd", W, [&[H::Int, H::Int]]),
    c!("lcm", W, [&[H::Int, H::Int]]),
    c!("factorial", W, [&[H::Int]]),
    c!("isnan", W, [&[H::Num]]),
    c!("iszero", W, [&[H::Num]]),
    c!("nanvl", W, [&[H::Float, H::Float]]),
    c!("greatest", W, [&[H::Num, H::Num], &[H::Str, H::Str], &[H::Time, H::Time]]),
    c!("least", W, [&[H::Num, H::Num], &[H::Str, H::Str], &[H::Time, H::Time]]),
    c!("pi", Totality::Constant, [&[]]),
    // conditionals
    c!("coalesce", Totality::Case, [&[H::Any, H::Any], &[H::Num, H::Num, H::Num]]),
    c!("nvl", Totality::Case, [&[H::Any, H::Any]]),
    c!("nvl2", Totality::Case, [&[H::Any, H::Any, H::Any]]),
    c!("nullif", W, [&[H::Any, H::Any]]),
    // dpq's own
    c!(
        "clamp",
        Totality::Builtin,
        literal & [1, 2],
        "bounds come from the query text, never from private values",
        [&[H::Num, H::LitInt(&[0, -5]), H::LitInt(&[10, i64::MAX])]]
    ),
];

/// The contract of a function, by DataFusion's canonical name.
pub fn contract(name: &str) -> Option<&'static Contract> {
    CONTRACTS.iter().find(|c| c.name == name)
}

/// Binary operators accepted over private rows. Comparisons and boolean logic
/// are total on the (coerced) operand types; the others run under
/// [`crate::engine::total::TotalOp`].
pub const OPERATORS: &[Operator] = &[
    Operator::Plus,
    Operator::Minus,
    Operator::Multiply,
    Operator::Divide,
    Operator::Modulo,
    Operator::BitwiseAnd,
    Operator::BitwiseOr,
    Operator::BitwiseXor,
    Operator::StringConcat,
    Operator::Eq,
    Operator::NotEq,
    Operator::Lt,
    Operator::LtEq,
    Operator::Gt,
    Operator::GtEq,
    Operator::And,
    Operator::Or,
    Operator::IsDistinctFrom,
    Operator::IsNotDistinctFrom,
];

/// Functions refused with a specific reason and way out.
fn refused_function(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "random" | "uuid" => {
            ("a random function would make the answer irreproducible and its bounding unverifiable", "remove it; dpq adds the randomness that privacy needs")
        }
        "repeat" | "lpad" | "rpad" | "overlay" => (
            "its output can be far larger than its input, so memory use would depend on private values",
            "compute the string at ingest, or use substr/left/right",
        ),
        "arrow_cast" | "arrow_try_cast" | "cast_to_type" | "try_cast_to_type" => {
            ("dpq does not evaluate it over private rows", "use standard SQL: CAST(x AS type) (dpq evaluates it as TRY_CAST: NULL when it does not fit)")
        }
        _ => return None,
    })
}

/// Check that `e` only uses constructs accepted over private rows.
pub fn check_row_expr(e: &Expr, context: &str) -> Result<()> {
    let mut err: Option<EngineError> = None;
    e.apply(|node| {
        let bad = check_node(node, context);
        if let Some(b) = bad {
            err = Some(b);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(super::super::super::error::sql)?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn check_node(node: &Expr, context: &str) -> Option<EngineError> {
    match node {
        Expr::Column(_) | Expr::Literal(..) | Expr::Alias(_) | Expr::Not(_) | Expr::IsNull(_) | Expr::IsNotNull(_) => None,
        Expr::IsTrue(_) | Expr::IsFalse(_) | Expr::IsUnknown(_) | Expr::IsNotTrue(_) | Expr::IsNotFalse(_) | Expr::IsNotUnknown(_) => None,
        Expr::Negative(_) | Expr::Between(_) | Expr::Case(_) | Expr::Cast(_) | Expr::TryCast(_) => None,
        Expr::Like(l) | Expr::SimilarTo(l) => {
            let similar = matches!(node, Expr::SimilarTo(_));
            if !is_literal(&l.pattern) {
                return Some(refused(
                    format!("LIKE with a non-literal pattern in {context}"),
                    "a pattern built from private values could fail to compile",
                    "use a literal pattern, e.g. col LIKE 'ab%'",
                ));
            }
            if let Err(why) = super::total::check_pattern(l, similar) {
                return Some(refused(format!("the pattern of a LIKE/SIMILAR TO in {context}"), why, "fix the pattern"));
            }
            None
        }
        Expr::InList(il) => {
            if il.list.iter().all(is_literal) {
                None
            } else {
                Some(refused(format!("IN list with non-literal values in {context}"), "only literal lists are understood", "list literal values"))
            }
        }
        Expr::BinaryExpr(b) => {
            if OPERATORS.contains(&b.op) {
                None
            } else if matches!(b.op, Operator::RegexMatch | Operator::RegexIMatch | Operator::RegexNotMatch | Operator::RegexNotIMatch) {
                Some(refused(
                    format!("operator `{}` in {context}", b.op),
                    "a regular expression operator takes its pattern from any expression, and a pattern built from private values could fail to compile",
                    "use regexp_like(x, 'pattern') with a literal pattern, or LIKE",
                ))
            } else {
                Some(refused(
                    format!("operator `{}` in {context}", b.op),
                    "it is not on dpq's list of operators evaluated over private rows",
                    "rewrite the expression with arithmetic, comparisons or CASE",
                ))
            }
        }
        Expr::ScalarFunction(f) => {
            let name = f.func.name().to_ascii_lowercase();
            match contract(&name) {
                Some(c) => {
                    for &i in c.literal {
                        if f.args.get(i).is_some_and(|a| !is_literal(a)) {
                            return Some(refused(
                                format!("argument {} of `{name}` over private rows is not a literal", i + 1),
                                c.literal_why,
                                format!("write argument {} of {name}(…) as a literal", i + 1),
                            ));
                        }
                    }
                    None
                }
                None => Some(match refused_function(&name) {
                    Some((why, fix)) => refused(format!("function `{name}` over private rows"), why, fix),
                    None => refused(
                        format!("function `{name}` over private rows"),
                        "it is not on dpq's list of functions evaluated over private rows (docs/sql.md lists them)",
                        "use date_part/EXTRACT, date_trunc, CASE, arithmetic, lower/upper/substr, coalesce",
                    ),
                }),
            }
        }
        Expr::AggregateFunction(_) => Some(refused(
            format!("aggregate function inside a row expression in {context}"),
            "nested aggregates are not understood",
            "compute per-person values in a sub-query grouped by the privacy unit",
        )),
        Expr::WindowFunction(_) => Some(refused(
            "window function over private rows",
            "a window lets one person's rows change what is computed for others",
            "aggregate with GROUP BY instead; windows are fine on the noisy result (wrap the DP query in a sub-query)",
        )),
        Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) | Expr::SetComparison(_) => Some(refused(
            format!("sub-query expression in {context}"),
            "sub-queries inside expressions over private rows are not understood",
            "join the tables instead",
        )),
        Expr::Placeholder(_) => Some(refused("a $n placeholder", "parameters are not bound in queries over private rows", "inline the value")),
        other => {
            Some(refused(format!("expression `{other}` in {context}"), "dpq does not understand it, and unknown shapes fail closed", "simplify the expression"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::FunctionRegistry;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn every_contract_names_a_canonical_datafusion_function() {
        let ctx = crate::engine::session::test_context();
        for c in CONTRACTS {
            let f = ctx.udf(c.name).unwrap_or_else(|_| panic!("`{}` is not a function DataFusion knows", c.name));
            assert_eq!(f.name(), c.name, "`{}` is an alias; the table uses canonical names", c.name);
            assert!(!c.harness.is_empty(), "`{}` has no harness signatures", c.name);
            assert_eq!(c.literal.is_empty(), c.literal_why.is_empty(), "`{}`: literal positions need a reason", c.name);
        }
        let mut names: Vec<&str> = CONTRACTS.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CONTRACTS.len(), "a function is listed twice");
    }

    #[test]
    fn refuses_what_is_not_in_the_table() {
        let ctx = crate::engine::session::test_context();
        let call = |name: &str, args: Vec<Expr>| ctx.udf(name).unwrap().call(args);
        assert!(check_row_expr(&call("substr", vec![col("s"), lit(1), col("n")]), "WHERE").is_ok());
        let e = check_row_expr(&call("repeat", vec![col("s"), col("n")]), "WHERE").unwrap_err().to_string();
        assert!(e.contains("repeat") && e.contains("far larger"), "{e}");
        let e = check_row_expr(&call("random", vec![]), "SELECT").unwrap_err().to_string();
        assert!(e.contains("irreproducible"), "{e}");
        let e = check_row_expr(&call("date_trunc", vec![col("g"), col("ts")]), "GROUP BY").unwrap_err().to_string();
        assert!(e.contains("argument 1 of `date_trunc`") && e.contains("literal"), "{e}");
        let e = check_row_expr(&call("replace", vec![col("s"), col("a"), lit("b")]), "WHERE").unwrap_err().to_string();
        assert!(e.contains("argument 2 of `replace`"), "{e}");
        let e = check_row_expr(
            &Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(Box::new(col("a")), Operator::BitwiseShiftLeft, Box::new(lit(3)))),
            "WHERE",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("<<"), "{e}");
        assert!(check_row_expr(&col("a").like(col("b")), "WHERE").is_err());
        assert!(check_row_expr(&col("a").like(lit("x%")), "WHERE").is_ok());
    }
}
