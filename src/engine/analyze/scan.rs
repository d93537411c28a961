//! Rule: table scans.
//!
//! A scan of a table declared `public = true` is public; any other declared
//! table is private, and its columns carry what dpq.toml says about them: which
//! one is the privacy unit, bounds, key domains (values, or a public table's
//! column, loaded before analysis), and whether the table holds one row per
//! person. An undeclared table is refused. A domain table that has no data yet
//! matters only to queries that group by that column.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::TableScan;

use super::expr::{ColInfo, Domain};
use super::{Analyzer, Rel, refused};
use crate::config::{DomainConfig, DomainValue};
use crate::engine::error::{EngineError, Result};

impl Analyzer<'_> {
    pub(super) fn scan(&mut self, plan: &LogicalPlan, ts: &TableScan) -> Result<(LogicalPlan, Rel)> {
        let name = ts.table_name.table().to_string();
        self.tables.insert(name.clone());
        let tc = self
            .config
            .table(&name)
            .ok_or_else(|| refused(format!("table `{name}`"), "it is not declared in dpq.toml", format!("declare [tables.{name}] in dpq.toml")))?;
        if !ts.filters.is_empty() || ts.fetch.is_some() {
            return Err(crate::engine::error::internal("a pre-filtered table scan reached the analyser"));
        }
        let mut cols = Vec::new();
        for f in ts.projected_schema.fields() {
            let cc = tc.columns.get(f.name());
            let mut missing_domain = None;
            let domain = match cc.and_then(|c| c.domain.as_ref()) {
                Some(DomainConfig::Values(vals)) => Some(Arc::new(Domain {
                    values: vals.iter().map(|v| domain_value(v, f.data_type())).collect::<Result<_>>()?,
                    source: format!("dpq.toml values of {name}.{}", f.name()),
                })),
                Some(DomainConfig::Table { table, column }) => match self.domains.get(&(table.clone(), column.clone())) {
                    Some(d) => Some(Arc::new(Domain {
                        values: d.values.iter().map(|v| v.cast_to(f.data_type())).collect::<Result<_, _>>().map_err(crate::engine::error::sql)?,
                        source: d.source.clone(),
                    })),
                    None => {
                        missing_domain = Some(format!(
                            "the domain of {name}.{} is the public table `{table}`, which has no data yet\n  hint: ingest it first: dpq ingest {table} FILE",
                            f.name()
                        ));
                        None
                    }
                },
                None => None,
            };
            cols.push(ColInfo {
                unit: !tc.public && tc.privacy_unit.as_deref() == Some(f.name().as_str()),
                private: !tc.public,
                bounds: cc.and_then(|c| c.bounds),
                domain,
                unit_attr: !tc.public && tc.one_row_per_unit,
                origin: format!("{name}.{}", f.name()),
                missing_domain,
            });
        }
        Ok((plan.clone(), Rel { cols, private: !tc.public }))
    }

    /// `VALUES` and empty relations hold no private rows.
    pub(super) fn constant_rows(&mut self, plan: &LogicalPlan) -> Result<(LogicalPlan, Rel)> {
        let n = plan.schema().fields().len();
        Ok((plan.clone(), Rel { cols: vec![ColInfo::default(); n], private: false }))
    }
}

fn domain_value(v: &DomainValue, ty: &DataType) -> Result<ScalarValue> {
    let s = match v {
        DomainValue::Str(s) => ScalarValue::Utf8(Some(s.clone())),
        DomainValue::Int(i) => ScalarValue::Int64(Some(*i)),
        DomainValue::Float(f) => ScalarValue::Float64(Some(*f)),
        DomainValue::Bool(b) => ScalarValue::Boolean(Some(*b)),
    };
    s.cast_to(ty).map_err(|e| EngineError::Data(format!("domain value `{v}` does not fit the column type {ty}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn private_and_public_tables() {
        let q = dp(scan("messages").aggregate(vec![col("chat_kind")], vec![count(lit(1))]).unwrap().build().unwrap());
        assert_eq!(q.unit_name, "user_id");
        assert!(q.tables.contains("messages"));
        let public = analyze_plan(scan("emoji_catalog").project(vec![col("emoji")]).unwrap().build().unwrap()).unwrap();
        assert!(matches!(public, super::super::Analysis::Public { .. }));
    }

    #[test]
    fn a_missing_domain_table_matters_only_when_grouping_by_its_column() {
        let config = config();
        let empty = super::super::PublicDomains::new();
        let state = crate::engine::session::test_context().state();
        let run = |p: datafusion::logical_expr::LogicalPlan| {
            let p = state.analyzer().execute_and_check(p, state.config_options(), |_, _| {}).unwrap();
            super::super::analyze_logical(&config, &empty, &super::super::public::PublicParts::AsIs, p)
        };
        assert!(run(scan("messages").aggregate(vec![col("chat_kind")], vec![count(lit(1))]).unwrap().build().unwrap()).is_ok());
        let e = run(scan("messages").aggregate(vec![col("emoji")], vec![count(lit(1))]).unwrap().build().unwrap()).unwrap_err().to_string();
        assert!(e.contains("emoji_catalog") && e.contains("ingest it first"), "{e}");
    }
}
