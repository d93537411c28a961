//! A Ballista cluster that can run dpq's bounded plans: a scheduler and
//! executors with dpq's functions registered.
//!
//! Ballista ships plans between processes as protobuf and resolves every
//! function by *name* on the other side. A stock `ballista-scheduler` or
//! `ballista-executor` knows DataFusion's built-ins only, so a plan with
//! `dpq_bound` (per-person bounding, [`super::bound_op`]), `dpq_total`, the
//! totality wrappers ([`super::total`]) or `clamp` fails to decode there. The
//! processes started here are Ballista's own (`ballista_scheduler` /
//! `ballista_executor`, same wire protocol, same configuration) with two
//! overrides: the scheduler's session builder and the executor's function
//! registry add [`super::session::dpq_functions`] and
//! [`super::session::dpq_aggregate_functions`].
//!
//! Nothing private is configured here: executors read the Parquet parts the
//! plan names, compute per-person bounded contributions and per-group totals,
//! and return them to the dpq process that submitted the plan; the noise, the
//! ledger and the noise seed never leave that process (the plan carries only
//! the one-way bounding seed, see [`super::bound_op`]).

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::registry::BallistaFunctionRegistry;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;

use super::error::{EngineError, Result};
use super::session::{dpq_aggregate_functions, dpq_functions};

/// Where a scheduler listens.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to bind (`127.0.0.1:50050`; `0.0.0.0:50050` for every interface).
    pub bind: SocketAddr,
    /// The host name executors and clients use to reach this scheduler
    /// (default: the bind address's host).
    pub external_host: Option<String>,
}

/// How an executor joins a scheduler.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `host:port`.
    pub scheduler: (String, u16),
    /// Host to bind.
    pub bind_host: String,
    /// The host name the scheduler and other executors use to reach this one.
    pub external_host: Option<String>,
    /// Port for Arrow Flight (shuffle data and results).
    pub flight_port: u16,
    /// Port for the executor's gRPC service.
    pub grpc_port: u16,
    /// Tasks run at once (default: the number of cores).
    pub cores: Option<usize>,
    /// Directory for shuffle files (default: a temporary directory).
    pub work_dir: Option<String>,
    /// Bytes of memory for query execution (default: Ballista's fraction of the machine).
    pub memory_limit: Option<u64>,
}

fn cluster_error(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Data(format!("{what}: {e}"))
}

/// Run a scheduler until the process is stopped.
pub async fn run_scheduler(opts: SchedulerOptions) -> Result<()> {
    let session_builder: ballista_scheduler::scheduler_server::SessionBuilder = Arc::new(|config| {
        let mut state = ballista_core::utils::default_session_builder(config)?;
        use datafusion::execution::FunctionRegistry;
        for f in dpq_functions() {
            state.register_udf(f)?;
        }
        for f in dpq_aggregate_functions() {
            state.register_udaf(f)?;
        }
        Ok(state)
    });
    let mut config = SchedulerConfig::default()
        .with_hostname(opts.external_host.clone().unwrap_or_else(|| opts.bind.ip().to_string()))
        .with_port(opts.bind.port())
        .with_override_session_builder(session_builder);
    config.bind_host = opts.bind.ip().to_string();
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| cluster_error("cannot set up the scheduler", e))?;
    start_server(cluster, opts.bind, Arc::new(config)).await.map_err(|e| cluster_error(&format!("the scheduler on {} stopped", opts.bind), e))
}

/// The function registry of a dpq executor: Ballista's defaults and dpq's.
pub fn executor_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for f in dpq_functions() {
        for alias in f.aliases() {
            registry.scalar_functions.insert(alias.clone(), f.clone());
        }
        registry.scalar_functions.insert(f.name().to_string(), f);
    }
    for f in dpq_aggregate_functions() {
        for alias in f.aliases() {
            registry.aggregate_functions.insert(alias.clone(), f.clone());
        }
        registry.aggregate_functions.insert(f.name().to_string(), f);
    }
    registry
}

/// Run an executor until the process is stopped or the scheduler asks it to stop.
pub async fn run_executor(opts: ExecutorOptions) -> Result<()> {
    let mut config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.flight_port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.0.clone(),
        scheduler_port: opts.scheduler.1,
        // wait for a scheduler that is still starting
        scheduler_connect_timeout_seconds: 60,
        work_dir: opts.work_dir.clone(),
        print_thread_info: false,
        override_function_registry: Some(Arc::new(executor_registry())),
        ..Default::default()
    };
    if let Some(cores) = opts.cores {
        config.vcores = cores.max(1);
    }
    if let Some(limit) = opts.memory_limit {
        config.memory_pool_size = Some(limit);
    }
    let scheduler = format!("{}:{}", opts.scheduler.0, opts.scheduler.1);
    start_executor_process(Arc::new(config)).await.map_err(|e| cluster_error(&format!("the executor (scheduler {scheduler}) stopped"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function a dpq plan can name resolves on a dpq executor.
    #[test]
    fn the_executor_registry_knows_every_dpq_function() {
        let r = executor_registry();
        for f in dpq_functions() {
            assert!(r.scalar_functions.contains_key(f.name()), "{}", f.name());
        }
        for f in dpq_aggregate_functions() {
            assert!(r.aggregate_functions.contains_key(f.name()), "{}", f.name());
        }
        for name in ["dpq_bound", "dpq_total", "dpq_log2_bin", "clamp"] {
            assert!(r.scalar_functions.contains_key(name) || r.aggregate_functions.contains_key(name), "{name}");
        }
    }
}
