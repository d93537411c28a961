//! Helpers for the analyser's unit tests: the template configuration and plans
//! built with `LogicalPlanBuilder` over schema-only table sources (no data).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::logical_expr::builder::LogicalTableSource;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};

use super::{Analysis, Analyzer, DpQuery, PublicDomains};
use crate::config::{Config, TEMPLATE};
use crate::engine::error::Result;

pub fn config() -> Config {
    Config::parse(TEMPLATE, std::path::Path::new("dpq.toml")).unwrap()
}

fn schema(table: &str) -> Schema {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    Schema::new(match table {
        "messages" => {
            vec![f("user_id", DataType::Int64), f("ts", ts()), f("chat_kind", DataType::Utf8), f("emoji", DataType::Utf8), f("length", DataType::Int64)]
        }
        "users" => vec![f("user_id", DataType::Int64), f("age_group", DataType::Utf8), f("country", DataType::Utf8), f("signup", DataType::Date32)],
        "payments" => {
            vec![f("user_id", DataType::Int64), f("ts", ts()), f("amount_cents", DataType::Int64), f("category", DataType::Utf8), f("rate", DataType::Float64)]
        }
        "calls" => vec![f("user_id", DataType::Int64), f("ts", ts()), f("kind", DataType::Utf8), f("duration_s", DataType::Int64)],
        "emoji_catalog" => vec![f("emoji", DataType::Utf8), f("name", DataType::Utf8), f("category", DataType::Utf8)],
        other => panic!("no test schema for {other}"),
    })
}

/// A plan builder scanning `table` (schema only).
pub fn scan(table: &str) -> LogicalPlanBuilder {
    LogicalPlanBuilder::scan(table, Arc::new(LogicalTableSource::new(Arc::new(schema(table)))), None).unwrap()
}

/// The public domains the analyser would load (emoji from the catalogue).
pub fn domains() -> PublicDomains {
    let mut d = PublicDomains::new();
    let emoji = ["😂", "❤️", "👍"].iter().map(|e| datafusion::common::ScalarValue::from(*e)).collect();
    d.insert(("emoji_catalog".into(), "emoji".into()), Arc::new(super::expr::Domain { values: emoji, source: "public table emoji_catalog.emoji".into() }));
    d
}

/// Type-coerce `plan` as planning does, then analyse it.
pub fn analyze_plan(plan: LogicalPlan) -> Result<Analysis> {
    let config = config();
    let domains = domains();
    let state = crate::engine::session::test_context().state();
    let plan = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}).map_err(crate::engine::error::sql)?;
    super::analyze_logical(&config, &domains, &super::public::PublicParts::AsIs, plan)
}

/// The DP query of `plan`; panics when it is refused or public.
pub fn dp(plan: LogicalPlan) -> DpQuery {
    match analyze_plan(plan) {
        Ok(Analysis::Dp(q)) => *q,
        Ok(Analysis::Public { .. }) => panic!("analysed as public"),
        Err(e) => panic!("refused: {e}"),
    }
}

/// The refusal of `plan`, as text; panics when it is accepted.
pub fn refusal(plan: LogicalPlan) -> String {
    match analyze_plan(plan) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[allow(dead_code)]
fn _uses(_: Analyzer<'_>) {}
