//! The mathematics every released number depends on. No DataFusion or Arrow in
//! here: it can be read and audited on its own. Each mechanism's documentation
//! states its guarantee, its sensitivity assumption and a citation; tests sit
//! beside the code (`test.rs`).

pub mod accountant;
pub mod amount;
pub mod bounding;
pub mod fixed_point;
pub mod mechanisms;
pub mod noise;
pub mod partition;
pub mod quantile;
pub mod samplers;
pub mod special;
pub mod topk;
