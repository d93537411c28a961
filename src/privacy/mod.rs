//! The mathematics every released number depends on. No DataFusion or Arrow in
//! here: it can be read and audited on its own.

pub mod amount;
