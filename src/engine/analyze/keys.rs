//! Rule: the DP aggregate's group keys.
//!
//! A key is any accepted row expression (made total) except the privacy unit
//! itself, which would publish one row per person. A key with a public domain
//! (dpq.toml, a public table, `CASE` literals, a `date_part` field, a boolean)
//! is released for every domain value, zero-filled; a key without one needs
//! δ > 0 and goes through partition selection. `GROUPING SETS`/`ROLLUP`/`CUBE`
//! would be several releases in one and are refused.

use std::sync::Arc;

use datafusion::common::{Column, DFSchemaRef};
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::expr::{ColInfo, infer_domain, make_total};
use super::{Analyzer, Key, Rel, refused};
use crate::engine::error::{EngineError, Result};

impl Analyzer<'_> {
    pub(super) fn group_key(&self, g: &Expr, schema: &DFSchemaRef, rel: &Rel, unit: &Column, lookup: &dyn Fn(&Column) -> Option<ColInfo>) -> Result<Key> {
        if matches!(g, Expr::GroupingSet(_)) {
            return Err(refused("GROUPING SETS / ROLLUP / CUBE", "several groupings in one release are not supported", "run one query per grouping"));
        }
        let info = self.expr_info(g, schema, rel)?;
        if info.unit {
            return Err(refused(
                format!("the privacy unit `{}` in the output", unit.name),
                "grouping by the privacy unit would publish one row per person",
                "aggregate over people: COUNT(DISTINCT <unit>), or summarise per person in a sub-query and aggregate that",
            ));
        }
        let total = make_total(g.clone(), schema, "GROUP BY")?;
        let data_type = g.get_type(schema).map_err(crate::engine::error::sql)?;
        let domain = infer_domain(g, schema, lookup).map(Arc::new);
        if domain.is_none() {
            for c in g.column_refs() {
                if let Some(why) = lookup(c).and_then(|i| i.missing_domain) {
                    return Err(EngineError::Data(why));
                }
            }
        }
        Ok(Key { expr: total, data_type, domain, display: crate::sqltext::sql_notation(&g.schema_name().to_string()), unit_attr: info.unit_attr })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use datafusion::functions::datetime::expr_fn::date_part;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn keys_carry_their_domains() {
        let plan = scan("messages")
            .aggregate(vec![col("chat_kind"), date_part(lit("hour"), col("ts")).alias("h"), col("emoji")], vec![count(lit(1))])
            .unwrap()
            .build()
            .unwrap();
        let q = dp(plan);
        assert_eq!(q.keys[0].domain.as_ref().unwrap().values.len(), 2, "chat_kind from dpq.toml");
        assert_eq!(q.keys[1].domain.as_ref().unwrap().values.len(), 24, "hour of day");
        assert_eq!(q.keys[2].domain.as_ref().unwrap().values.len(), 3, "emoji from the public catalogue");
        assert!(!q.needs_partition_selection());
    }

    #[test]
    fn the_unit_is_never_a_key() {
        let plan = scan("messages").aggregate(vec![col("user_id")], vec![count(lit(1))]).unwrap().build().unwrap();
        assert!(refusal(plan).contains("privacy unit `user_id` in the output"));
    }

    #[test]
    fn a_key_without_a_domain_needs_partition_selection() {
        let plan = scan("messages").aggregate(vec![datafusion::functions::expr_fn::lower(col("emoji"))], vec![count(lit(1))]).unwrap().build().unwrap();
        let q = dp(plan);
        assert!(q.needs_partition_selection());
        assert!(q.keys[0].expr.to_string().contains("total_lower"), "{}", q.keys[0].expr);
    }
}
