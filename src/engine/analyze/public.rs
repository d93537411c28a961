//! Rule: public parts of a private query are evaluated before it.
//!
//! A query that joins private rows with a public sub-query (a public table, a
//! cross join of public tables, a public aggregate) would otherwise evaluate
//! that sub-query *during* the private query — and only if the engine decides
//! to: a hash join whose build side (the private rows) is empty never reads
//! its probe side. A public sub-query that fails (a cast that does not fit, a
//! cross join too large for memory) would then fail only when some private
//! row exists, which reveals that row (found by the attack on the first
//! version). So every maximal public sub-plan below a private query is run
//! here, before anything is charged, and replaced by its rows (`VALUES`): its
//! failures happen — or not — whatever the private data holds, and the private
//! query only reads constants.
//!
//! The analyser still sees the original sub-plan (for the public columns'
//! configured bounds and domains); [`PublicParts`] maps it to its rows.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan, Values};
use datafusion::prelude::SessionContext;

use super::is_private_scan;
use crate::config::Config;
use crate::engine::error::{EngineError, Result, internal, refused};

/// The most rows a public sub-query of a private query may have.
pub const MAX_PUBLIC_ROWS: usize = 100_000;

/// The public sub-plans of a private query, evaluated.
#[derive(Debug, Clone)]
pub enum PublicParts {
    /// Each maximal public sub-plan with the constant plan of its rows.
    Evaluated(Vec<(LogicalPlan, LogicalPlan)>),
    /// The analyser's unit tests: nothing is executed, sub-plans stay as they are.
    #[cfg(test)]
    AsIs,
}

impl PublicParts {
    /// What the private query reads in place of the public sub-plan `p`.
    pub fn replacement(&self, p: &LogicalPlan) -> Result<LogicalPlan> {
        match self {
            PublicParts::Evaluated(list) => list
                .iter()
                .find(|(orig, _)| orig == p)
                .map(|(_, rows)| rows.clone())
                .ok_or_else(|| internal("a public sub-query was not evaluated before the private query")),
            #[cfg(test)]
            PublicParts::AsIs => Ok(p.clone()),
        }
    }
}

/// Does `p` need evaluating (a public sub-plan that is not constant already)?
fn needs_evaluation(config: &Config, p: &LogicalPlan) -> bool {
    !is_private_scan(config, p) && !matches!(p, LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_))
}

/// The maximal public sub-plans below a private plan.
fn public_parts(config: &Config, p: &LogicalPlan, out: &mut Vec<LogicalPlan>) {
    if !is_private_scan(config, p) {
        if needs_evaluation(config, p) && !out.contains(p) {
            out.push(p.clone());
        }
        return;
    }
    for i in p.inputs() {
        public_parts(config, i, out);
    }
}

/// Run every maximal public sub-plan of the private `plan` (public data only)
/// and return them with their rows.
pub async fn evaluate(ctx: &SessionContext, config: &Config, plan: &LogicalPlan) -> Result<PublicParts> {
    let mut parts = Vec::new();
    public_parts(config, plan, &mut parts);
    let mut out = Vec::new();
    for p in parts {
        let rows = rows_of(ctx, &p).await?;
        out.push((p, rows));
    }
    Ok(PublicParts::Evaluated(out))
}

async fn rows_of(ctx: &SessionContext, p: &LogicalPlan) -> Result<LogicalPlan> {
    let too_many = || {
        refused(
            format!("a public sub-query with more than {MAX_PUBLIC_ROWS} rows joined with private rows"),
            "dpq evaluates the public parts of a query before reading private rows (so that their failures cannot depend on private data), and keeps them small",
            "filter or aggregate the public table in the sub-query, or join on fewer columns",
        )
    };
    // one partition: the same rows, and the same first error, on every run
    let mut cfg = ctx.state().config().clone();
    cfg.options_mut().execution.target_partitions = 1;
    let ctx = SessionContext::new_with_state(datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state()).with_config(cfg).build());
    let df = ctx.execute_logical_plan(p.clone()).await.map_err(public_error)?;
    let batches = df.limit(0, Some(MAX_PUBLIC_ROWS + 1)).map_err(public_error)?.collect().await.map_err(public_error)?;
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    if n > MAX_PUBLIC_ROWS {
        return Err(too_many());
    }
    let schema = p.schema().clone();
    if n == 0 {
        return Ok(LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema }));
    }
    let mut values = Vec::with_capacity(n);
    for b in &batches {
        for i in 0..b.num_rows() {
            let mut row = Vec::with_capacity(b.num_columns());
            for (c, field) in b.columns().iter().zip(schema.fields()) {
                let v = ScalarValue::try_from_array(c.as_ref(), i).map_err(crate::engine::error::sql)?;
                let v = if &v.data_type() == field.data_type() { v } else { v.cast_to(field.data_type()).map_err(crate::engine::error::sql)? };
                row.push(Expr::Literal(v, None));
            }
            values.push(row);
        }
    }
    Ok(LogicalPlan::Values(Values { schema, values }))
}

/// A failure of a public sub-query: about public data only, so it is shown.
fn public_error(e: datafusion::error::DataFusionError) -> EngineError {
    EngineError::Sql(format!("a public sub-query of this query failed (before anything was charged): {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{JoinType, col, lit};

    #[test]
    fn the_maximal_public_parts_are_found() {
        let cfg = config();
        let cat = scan("emoji_catalog").alias("e").unwrap().build().unwrap();
        let plan = scan("messages")
            .join(cat.clone(), JoinType::Inner, (vec!["messages.emoji"], vec!["e.emoji"]), None)
            .unwrap()
            .aggregate(vec![col("e.category")], vec![count(lit(1))])
            .unwrap()
            .build()
            .unwrap();
        let mut parts = Vec::new();
        public_parts(&cfg, &plan, &mut parts);
        assert_eq!(parts, vec![cat], "the aliased catalogue scan, as one part");
        let mut none = Vec::new();
        public_parts(&cfg, &scan("messages").build().unwrap(), &mut none);
        assert!(none.is_empty());
    }
}
