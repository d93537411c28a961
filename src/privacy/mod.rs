//! The mathematics every released number depends on. No DataFusion or Arrow in
//! here: it can be read and audited on its own. Each mechanism's documentation
//! states its guarantee, its sensitivity assumption and a citation; tests sit
//! beside the code (`test.rs`).

pub mod amount;
pub mod samplers;
pub mod special;
pub mod noise;
pub mod fixed_point;
pub mod partition;
pub mod quantile;
pub mod topk;
pub mod accountant;
pub mod bounding;
