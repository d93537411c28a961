//! Physical rule: the bounded plans shuffle once, by person.
//!
//! A bounded plan aggregates per (person, group) and then per person (the
//! bounding operator, or the size histogram of auto-bounds). DataFusion plans
//! each aggregate in two phases with a shuffle before each final phase:
//!
//! ```text
//! AggregateExec FinalPartitioned [__u]            (per person)
//!   RepartitionExec Hash([__u])                   ← every person's partial state, encoded and shuffled
//!     AggregateExec Partial [__u]
//!       AggregateExec FinalPartitioned [__u, k…]  (per person and group)
//!         RepartitionExec Hash([__u, k…])
//!           AggregateExec Partial [__u, k…]
//! ```
//!
//! Rows hashed by person alone are already grouped by (person, group), so one
//! shuffle suffices and the per-person aggregate runs in one phase:
//!
//! ```text
//! AggregateExec SinglePartitioned [__u]
//!   AggregateExec FinalPartitioned [__u, k…]
//!     RepartitionExec Hash([__u])
//!       AggregateExec Partial [__u, k…]
//! ```
//!
//! (A projection between the two aggregates is kept in place.)
//!
//! The result is the same (each person's rows meet in one partition either
//! way); what goes is the bounding operator's partial state — every person's
//! rows encoded, shuffled, decoded and merged — and a shuffle. The rule runs
//! after DataFusion's own (which would otherwise re-add the shuffle), and only
//! on this exact shape, with `__u` (the person column of every bounded plan)
//! first among the groups; anything else is left as it is.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{Distribution, ExecutionPlan, ExecutionPlanProperties, Partitioning};

/// The person column of the bounded plans (`bounded::U`).
const UNIT: &str = "__u";

#[derive(Debug, Default)]
pub struct OneShuffle;

fn agg(p: &Arc<dyn ExecutionPlan>, mode: AggregateMode) -> Option<&AggregateExec> {
    p.downcast_ref::<AggregateExec>().filter(|a| *a.mode() == mode)
}

type Exprs = Vec<Arc<dyn datafusion::physical_expr::PhysicalExpr>>;

fn hash(p: &Arc<dyn ExecutionPlan>) -> Option<(&RepartitionExec, Exprs, usize)> {
    let r = p.downcast_ref::<RepartitionExec>()?;
    match r.partitioning().clone() {
        Partitioning::Hash(e, n) if !r.preserve_order() => Some((r, e, n)),
        _ => None,
    }
}

/// The person column, by identity: `__u` at index 0 of its input. (By name
/// alone, a projection renaming another column `__u` would pass, and the
/// shuffle would hash one column while the aggregate groups by another.)
fn is_unit(e: &Arc<dyn datafusion::physical_expr::PhysicalExpr>) -> bool {
    e.downcast_ref::<Column>().is_some_and(|c| c.name() == UNIT && c.index() == 0)
}

/// Groups of an aggregate: plain expressions (no grouping sets), the person first.
fn unit_first(a: &AggregateExec, len: Option<usize>) -> bool {
    let g = a.group_expr();
    g.is_single() && !g.expr().is_empty() && len.is_none_or(|n| g.expr().len() == n) && is_unit(&g.expr()[0].0) && g.expr()[0].1 == UNIT
}

/// Rewrite one matching subtree; `None` when `p` is not the shape.
fn rewrite(p: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(fin) = agg(p, AggregateMode::FinalPartitioned).filter(|a| unit_first(a, Some(1))) else { return Ok(None) };
    let Some((rep, _, _)) = hash(fin.input()).filter(|(_, e, _)| e.len() == 1 && is_unit(&e[0])) else { return Ok(None) };
    let Some(part) = agg(rep.input(), AggregateMode::Partial).filter(|a| unit_first(a, Some(1))) else { return Ok(None) };
    // (a projection of the partials' columns may sit between the two)
    let projection = part.input().downcast_ref::<ProjectionExec>();
    if let Some(p) = projection
        && !p.expr().first().is_some_and(|e| is_unit(&e.expr) && e.alias == UNIT)
    {
        return Ok(None);
    }
    let below = projection.map_or(part.input(), |p| p.input());
    let Some(fin_uk) = agg(below, AggregateMode::FinalPartitioned).filter(|a| unit_first(a, None) && a.group_expr().expr().len() > 1) else {
        return Ok(None);
    };
    let Some((rep_uk, e2, n)) = hash(fin_uk.input()).filter(|(_, e, _)| e.len() > 1 && is_unit(&e[0])) else { return Ok(None) };
    if agg(rep_uk.input(), AggregateMode::Partial).filter(|a| unit_first(a, None)).is_none() {
        return Ok(None);
    }
    // hash by the person alone, where the (person, group) partials are shuffled
    let by_unit: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(Arc::clone(rep_uk.input()), Partitioning::Hash(vec![Arc::clone(&e2[0])], n))?);
    let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
    let mut input = Arc::clone(below).replace_children(vec![by_unit], recompute)?;
    if projection.is_some() {
        input = Arc::clone(part.input()).replace_children(vec![input], recompute)?;
    }
    // the per-person aggregate in one phase, over the (person, group) rows
    let single = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        part.group_expr().clone(),
        part.aggr_expr().to_vec(),
        part.filter_expr().to_vec(),
        input,
        part.input_schema(),
    )?;
    if single.schema() != fin.schema() {
        return Ok(None);
    }
    // the person hashed is the person grouped by: the new shuffle's
    // partitioning, seen through the aggregate below and the projection, must
    // satisfy what the one-phase aggregate requires
    let input = single.input();
    let required = Distribution::KeyPartitioned(single.group_expr().input_exprs());
    if !input.output_partitioning().satisfaction(&required, input.equivalence_properties(), true).is_satisfied() {
        return Ok(None);
    }
    Ok(Some(Arc::new(single)))
}

impl PhysicalOptimizerRule for OneShuffle {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        let t = Arc::clone(&plan).transform_down(|p| {
            Ok(match rewrite(&p)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(p),
            })
        })?;
        if !t.transformed {
            return Ok(t.data);
        }
        // DataFusion's own sanity check runs before this rule: run it again on
        // what the rule built, and keep DataFusion's plan if it fails (a plan
        // question, never a data one: the query runs either way)
        match datafusion::physical_optimizer::sanity_checker::SanityCheckPlan::new().optimize(t.data, config) {
            Ok(p) => Ok(p),
            Err(_) => Ok(plan),
        }
    }

    fn name(&self) -> &str {
        "dpq_one_shuffle"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// 4 partitions of (person, group) rows: persons repeat across partitions.
    fn ctx(rule: bool) -> SessionContext {
        let cfg = SessionConfig::new().with_target_partitions(4);
        let mut b = SessionStateBuilder::new().with_config(cfg).with_default_features();
        if rule {
            b = b.with_physical_optimizer_rule(Arc::new(OneShuffle));
        }
        let ctx = SessionContext::new_with_state(b.build());
        let schema = Arc::new(Schema::new(vec![Field::new("__u", DataType::Int64, true), Field::new("__k0", DataType::Int32, true)]));
        let parts: Vec<Vec<RecordBatch>> = (0..4)
            .map(|p| {
                let u: Int64Array = (0..3000).map(|i| Some(((i * 7 + p * 13) % 500) as i64)).collect();
                let k: Int32Array = (0..3000i32).map(|i| Some((i + p) % 9)).collect();
                vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(u), Arc::new(k)]).unwrap()]
            })
            .collect();
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, parts).unwrap())).unwrap();
        ctx
    }

    const SQL: &str = "SELECT __u, count(*) AS groups, sum(r) AS rows, max(r) AS largest FROM \
        (SELECT __u, __k0, count(*) AS r FROM t GROUP BY __u, __k0) GROUP BY __u ORDER BY __u";

    /// The golden shape: one shuffle, by person; the per-person aggregate in
    /// one phase; and the same answer as DataFusion's plan.
    #[tokio::test]
    async fn one_shuffle_by_person_and_the_same_answer() {
        let (with, without) = (ctx(true), ctx(false));
        let plan = with.sql(SQL).await.unwrap().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(false).to_string();
        assert_eq!(text.matches("RepartitionExec: partitioning=Hash").count(), 1, "{text}");
        assert!(text.contains("RepartitionExec: partitioning=Hash([__u@0], 4)"), "{text}");
        assert!(text.contains("AggregateExec: mode=SinglePartitioned, gby=[__u@0 as __u]"), "{text}");
        let before = without.sql(SQL).await.unwrap().create_physical_plan().await.unwrap();
        let before_text = displayable(before.as_ref()).indent(false).to_string();
        assert_eq!(before_text.matches("RepartitionExec: partitioning=Hash").count(), 2, "DataFusion's own plan shuffles twice: {before_text}");
        let a = with.sql(SQL).await.unwrap().collect().await.unwrap();
        let b = without.sql(SQL).await.unwrap().collect().await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|b| b.num_rows()).sum::<usize>(), 500);
    }

    /// Other shapes are left alone, with DataFusion's plan and answer: a
    /// per-group aggregate over the partials (not by person), and a column
    /// renamed `__u` between the two aggregates (hashing the real `__u` while
    /// grouping by the renamed one would split groups across partitions).
    #[tokio::test]
    async fn other_shapes_are_untouched() {
        for sql in [
            "SELECT __k0, count(*) FROM (SELECT __u, __k0, count(*) AS r FROM t GROUP BY __u, __k0) GROUP BY __k0 ORDER BY __k0",
            "SELECT __u, count(*) AS n FROM (SELECT __k0 AS __u, __u AS k FROM (SELECT __u, __k0 FROM t GROUP BY __u, __k0)) GROUP BY __u ORDER BY __u",
            "SELECT __u, count(*) AS n FROM (SELECT CAST(__k0 AS BIGINT) AS __u, __u AS k FROM (SELECT __u, __k0 FROM t GROUP BY __u, __k0)) GROUP BY __u ORDER BY __u",
        ] {
            let plan = |c: SessionContext| async move {
                displayable(c.sql(sql).await.unwrap().create_physical_plan().await.unwrap().as_ref()).indent(false).to_string()
            };
            assert_eq!(plan(ctx(true)).await, plan(ctx(false)).await, "{sql}");
            let a = ctx(true).sql(sql).await.unwrap().collect().await.unwrap();
            let b = ctx(false).sql(sql).await.unwrap().collect().await.unwrap();
            assert_eq!(a, b, "{sql}");
        }
    }
}
