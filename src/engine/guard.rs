//! The guard that makes it impossible to execute a plan over private tables that
//! did not go through the DP rewrite.
//!
//! Private tables are registered as [`PrivateTable`]s: their `scan` refuses unless
//! the session carries a [`ScanToken`]. Only [`super::bounded::execute_bounded`],
//! which takes a [`super::bounded::BoundedPlan`] (constructible only by the
//! rewriter), creates a session with the token. Planning, `explain` and public
//! queries run in sessions without it.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

/// Present in the session configuration of bounded executions only.
#[derive(Debug)]
pub struct ScanToken(pub(super) ());

/// A private table: scans only under a [`ScanToken`].
#[derive(Debug)]
pub struct PrivateTable {
    pub name: String,
    pub inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for PrivateTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }
    fn get_logical_plan(&'_ self) -> Option<Cow<'_, LogicalPlan>> {
        None
    }
    async fn scan(&self, state: &dyn Session, projection: Option<&Vec<usize>>, filters: &[Expr], limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        if state.config().get_extension::<ScanToken>().is_none() {
            return Err(DataFusionError::Plan(format!("refusing to read private table `{}` outside the DP rewrite (internal guard)", self.name)));
        }
        self.inner.scan(state, projection, filters, limit).await
    }
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}
