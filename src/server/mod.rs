//! `dpq serve`: a differentially private SQL gateway on the PostgreSQL wire
//! protocol. psql, psycopg, JDBC, SQLAlchemy/pandas and BI tools connect to it
//! as to a PostgreSQL server; every answer about private tables comes from a
//! [`Session`] of the authenticated analyst, so it is analysed, bounded,
//! noised and charged exactly as `dpq query` would, and recorded in the
//! dataset's ledger under the analyst's name.
//!
//! What a connection can do, and where it goes:
//!
//! | statement | handled by |
//! |---|---|
//! | `SELECT …` over the dataset's tables | [`Session::query`]: analysed, refused or charged |
//! | `SELECT …` over `pg_catalog` / `information_schema` only, or no table | a catalog built from dpq.toml only (the tables exist there, empty) |
//! | `EXPLAIN …`, `SELECT * FROM dpq_explain('…')` | [`Session::explain`] (spends nothing) |
//! | `SET dpq.epsilon = …` (and `delta`, `confidence`, `mechanism`, `bounds`, `fresh`) | the connection's settings for following queries |
//! | `SHOW dpq.budget`, `SHOW dpq.last_release`, `SHOW dpq.*` | the ledger, the last answer's privacy metadata, the settings |
//! | `SET`/`SHOW` of PostgreSQL parameters, `BEGIN`/`COMMIT`/`ROLLBACK` | accepted (read-only; there are no transactions to keep) |
//!
//! Analysts authenticate with SCRAM-SHA-256 against verifiers in
//! `analysts.toml` ([`scram`](crate::server::scram)); an unknown name and a wrong password are
//! refused alike. Quotas are enforced by the ledger in the transaction that
//! charges the dataset's budget. See docs/gateway.md.

mod catalog;
mod conn;
mod front;
mod params;
pub mod scram;
mod sqlstate;
mod statement;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::session::{Backend, Error, Session, SessionOptions};

/// The certificate chain and private key (PEM) for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (`127.0.0.1:5433`).
    pub listen: SocketAddr,
    /// TLS; without it, connections are plain TCP (listen on localhost only).
    pub tls: Option<TlsFiles>,
    /// Connections served at once; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// A statement running longer is cancelled with SQLSTATE 57014 (its
    /// charge stays spent and ends as a recorded failure).
    pub statement_timeout: Option<Duration>,
    /// On shutdown, how long to let running statements finish.
    pub shutdown_grace: Duration,
    /// Memory each statement may use before spilling to disk (every statement
    /// runs in an execution context of its own, and a connection runs one
    /// statement at a time, so this is also the limit per connection);
    /// default: dpq.toml's `memory_limit`.
    pub memory_per_statement: Option<u64>,
    /// Where bounded plans run.
    pub backend: Backend,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: "127.0.0.1:5433".parse().unwrap(),
            tls: None,
            max_connections: 64,
            statement_timeout: Some(Duration::from_secs(300)),
            shutdown_grace: Duration::from_secs(30),
            memory_per_statement: None,
            backend: Backend::Local,
        }
    }
}

/// State shared by every connection.
pub(crate) struct Shared {
    pub data: PathBuf,
    pub options: ServeOptions,
    /// One session per analyst, opened on first use.
    sessions: tokio::sync::Mutex<HashMap<String, Arc<Session>>>,
    /// The catalog of the public configuration (no rows of private tables).
    pub catalog: catalog::Catalog,
    /// Per-process secret for the decoy salts of unknown names.
    pub decoy_secret: [u8; 32],
    /// Authenticated connections being served.
    pub connections: AtomicUsize,
    /// Connections not yet authenticated (the front door's count).
    pub pending: front::Pending,
    /// Statements running (shutdown waits for them).
    pub running: AtomicUsize,
    pub idle: tokio::sync::Notify,
}

impl Shared {
    /// The session of an authenticated analyst.
    pub async fn session(&self, analyst: &str) -> Result<Arc<Session>, Error> {
        let mut map = self.sessions.lock().await;
        if let Some(s) = map.get(analyst) {
            return Ok(s.clone());
        }
        let s = Arc::new(
            Session::open_with(
                &self.data,
                SessionOptions { analyst: Some(analyst.to_string()), memory_limit: self.options.memory_per_statement, backend: self.options.backend.clone() },
            )
            .await?,
        );
        map.insert(analyst.to_string(), s.clone());
        Ok(s)
    }

    /// The stored verifier text of `name`, read from analysts.toml now (each
    /// statement checks it is still the one its connection logged in with).
    pub fn verifier_text(&self, name: &str) -> Option<String> {
        let analysts = crate::config::analysts::Analysts::load(&self.data).ok()?;
        analysts.analysts.get(name)?.scram.clone()
    }
}

/// A guard counting a running statement.
pub(crate) struct Running<'a>(&'a Shared);

impl<'a> Running<'a> {
    pub fn new(s: &'a Shared) -> Running<'a> {
        s.running.fetch_add(1, Ordering::SeqCst);
        Running(s)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn tls_acceptor(files: &TlsFiles) -> Result<pgwire::tokio::TlsAcceptor, Error> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("--tls-cert {}: {e}\n  hint: give a PEM file with the certificate chain", files.cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("--tls-cert {}: no certificate in the file", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Config(format!("--tls-key {}: {e}\n  hint: give a PEM file with the private key (PKCS#8, PKCS#1 or SEC1)", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("--tls-cert/--tls-key: {e}")))?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// The secret the decoy salts of unknown names derive from, kept in
/// `gateway.secret` (0600) beside dpq.toml: the same across restarts, so an
/// unknown name's salt stays as stable as a real analyst's (with a secret per
/// process, a restart told the two apart: found by the gateway attack).
fn decoy_secret(data: &Path) -> Result<[u8; 32], Error> {
    let path = data.join("gateway.secret");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(s) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(s);
    }
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).map_err(|_| Error::Internal("no randomness".into()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(|e| Error::Data(format!("cannot write {}: {e}", path.display())))?;
    std::io::Write::write_all(&mut f, &secret).map_err(|e| Error::Data(format!("cannot write {}: {e}", path.display())))?;
    Ok(secret)
}

/// A running gateway: its address, and a handle to stop it.
pub struct Server {
    pub local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Server {
    /// Stop accepting connections, let running statements finish (up to the
    /// grace period), then return.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|e| Error::Internal(format!("the gateway task: {e}")))?
    }

    /// Serve until the task ends (it does not on its own).
    pub async fn wait(self) -> Result<(), Error> {
        self.task.await.map_err(|e| Error::Internal(format!("the gateway task: {e}")))?
    }
}

/// Start the gateway over the dataset in `data`. Returns once it listens.
pub async fn start(data: impl AsRef<Path>, options: ServeOptions) -> Result<Server, Error> {
    crate::engine::total::install_panic_hook();
    let data = std::fs::canonicalize(data.as_ref()).map_err(|e| Error::Data(format!("cannot open {}: {e}", data.as_ref().display())))?;
    // fail fast: the dataset opens and its ledger verifies before anyone connects
    let probe = Session::open_with(&data, SessionOptions { analyst: Some("dpq-gateway".into()), memory_limit: None, backend: options.backend.clone() }).await?;
    probe.ledger()?.ensure_current()?;
    let catalog = catalog::Catalog::new(probe.dataset())?;
    let tls = match &options.tls {
        Some(f) => Some(tls_acceptor(f)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}\n  hint: choose another port with --listen 127.0.0.1:PORT", options.listen)))?;
    let local_addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let secret = decoy_secret(&data)?;
    let shared = Arc::new(Shared {
        data,
        options,
        sessions: tokio::sync::Mutex::new(HashMap::new()),
        catalog,
        decoy_secret: secret,
        connections: AtomicUsize::new(0),
        pending: front::Pending::default(),
        running: AtomicUsize::new(0),
        idle: tokio::sync::Notify::new(),
    });
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((socket, peer)) = accepted else {
                        // out of file descriptors, or a connection reset while queued:
                        // back off instead of spinning on the error
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    let tls = tls.clone();
                    let shared = shared.clone();
                    tokio::spawn(front::serve(socket, peer, tls, shared));
                }
                _ = stopped.changed() => break,
            }
        }
        drop(listener);
        // let running statements finish: their charges end with a stored
        // answer rather than as unfinished entries
        let deadline = tokio::time::Instant::now() + shared.options.shutdown_grace;
        while shared.running.load(Ordering::SeqCst) > 0 {
            let notified = shared.idle.notified();
            if shared.running.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        Ok(())
    });
    Ok(Server { local_addr, stop, task })
}
