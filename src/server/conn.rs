//! One client connection: SCRAM authentication, the connection's settings,
//! and the simple and extended query protocols over [`Session`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_USER, PgWireConnectionState, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::scram::{self, Exchange, Failure};
use super::sqlstate::{self, error};
use super::statement::{self, Kind};
use super::{Running, Shared};
use crate::config::MechanismKind;
use crate::privacy::amount::Amount;
use crate::session::{Answer, QueryOptions, Session};

/// The connection's `SET dpq.…` settings (unset: the dataset's defaults),
/// kept as the options of its queries.
type Settings = QueryOptions;

/// The settings `SET dpq.…` accepts.
const DPQ_SETTINGS: &[&str] = &[
    "dpq.epsilon",
    "dpq.delta",
    "dpq.confidence",
    "dpq.mechanism",
    "dpq.bounds",
    "dpq.fresh",
    "dpq.max_rows_per_unit",
    "dpq.max_groups_per_unit",
    "dpq.max_rows_per_group",
];

enum Auth {
    /// Before the startup message.
    Initial,
    /// Mechanisms offered to `user`.
    Offered(String),
    /// Server-first sent.
    /// Server-first sent: the analyst, the exchange, and the verifier text it
    /// was started with (kept as the login's: a password changed during the
    /// exchange must fail the first statement — found by the second attack).
    Exchanging(String, Box<Exchange>, String),
    /// Logged in: the analyst and the verifier they logged in with.
    Done(String, String),
}

struct State {
    auth: Auth,
    settings: Settings,
    /// PostgreSQL parameters the client set (answered by SHOW).
    params: BTreeMap<String, String>,
    /// The last answer's privacy metadata (SHOW dpq.last_release).
    last: Option<serde_json::Value>,
}

pub struct Conn {
    shared: Arc<Shared>,
    /// The client's address and whether it connected with TLS (from the front door).
    peer: std::net::SocketAddr,
    secure: bool,
    state: std::sync::Mutex<State>,
    /// This connection holds one of the `max_connections` slots.
    counted: AtomicBool,
    parser: Arc<Parser>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.counted.load(Ordering::SeqCst) {
            self.shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The handlers of one connection (pgwire asks for each once per connection).
pub struct Handlers(Arc<Conn>);

impl Handlers {
    pub fn new(shared: Arc<Shared>, peer: std::net::SocketAddr, secure: bool) -> Handlers {
        Handlers(Arc::new(Conn {
            shared,
            peer,
            secure,
            state: std::sync::Mutex::new(State { auth: Auth::Initial, settings: Settings::default(), params: BTreeMap::new(), last: None }),
            counted: AtomicBool::new(false),
            parser: Arc::new(Parser),
        }))
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }
}

/// One log line. The analyst name comes from the client (before
/// authentication, anything): control characters are escaped, so a name
/// cannot forge lines (found by the gateway attack).
pub(crate) fn log(who: &str, from: std::net::SocketAddr, what: &str) {
    let clean = |s: &str| -> String { s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect() };
    eprintln!("{} {from} {}: {}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"), clean(who), clean(what));
}

fn parameter_provider() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = "16.6".into();
    p.is_superuser = false;
    p.default_transaction_read_only = true;
    p.time_zone = "UTC".into();
    p
}

#[async_trait]
impl StartupHandler for Conn {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let Some(user) = client.metadata().get(METADATA_USER).cloned() else {
                    return Err(sqlstate::fatal("28000", "no user name given: connect as an analyst of analysts.toml (psql -U NAME)"));
                };
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                self.state.lock().unwrap().auth = Auth::Offered(user);
                client.send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![scram::MECHANISM.to_string()]))).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let auth = std::mem::replace(&mut self.state.lock().unwrap().auth, Auth::Initial);
                match auth {
                    Auth::Offered(user) => {
                        let init = msg.into_sasl_initial_response()?;
                        if init.auth_method != scram::MECHANISM {
                            return Err(sqlstate::fatal(
                                "28000",
                                format!("authentication method {} is not offered; use {}", init.auth_method, scram::MECHANISM),
                            ));
                        }
                        let data = init.data.map(|d| d.to_vec()).unwrap_or_default();
                        let text = self.shared.verifier_text(&user);
                        let verifier = text.as_deref().and_then(|v| scram::Verifier::parse(v).ok());
                        match Exchange::start(verifier, &scram::decoy_salt(&self.shared.decoy_secret, &user), &data) {
                            Ok((ex, server_first)) => {
                                self.state.lock().unwrap().auth = Auth::Exchanging(user, Box::new(ex), text.unwrap_or_default());
                                client.send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(server_first.into_bytes().into()))).await?;
                            }
                            Err(Failure::Protocol(m)) => return Err(sqlstate::fatal("08P01", m)),
                            Err(Failure::Rejected) => {
                                return Err(sqlstate::fatal(sqlstate::AUTH, format!("password authentication failed for user \"{user}\"")));
                            }
                        }
                    }
                    Auth::Exchanging(user, ex, verifier) => {
                        let resp = msg.into_sasl_response()?;
                        match ex.finish(&resp.data) {
                            Ok(server_final) => {
                                // a connection slot is taken by an authenticated analyst only
                                // (unauthenticated clients are limited by the front door)
                                if !self.counted.swap(true, Ordering::SeqCst) {
                                    let n = self.shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                                    if n > self.shared.options.max_connections {
                                        log(&user, self.peer, "refused: too many connections");
                                        return Err(sqlstate::fatal(
                                            sqlstate::TOO_MANY,
                                            format!(
                                                "sorry, too many clients already (this gateway serves {} connections at once)",
                                                self.shared.options.max_connections
                                            ),
                                        ));
                                    }
                                }
                                client.send(PgWireBackendMessage::Authentication(Authentication::SASLFinal(server_final.into_bytes().into()))).await?;
                                log(&user, self.peer, if self.secure { "logged in (TLS)" } else { "logged in" });
                                self.state.lock().unwrap().auth = Auth::Done(user, verifier);
                                finish_authentication(client, &parameter_provider()).await?;
                            }
                            Err(Failure::Rejected) => {
                                log(&user, self.peer, "authentication failed");
                                return Err(sqlstate::fatal(sqlstate::AUTH, format!("password authentication failed for user \"{user}\"")));
                            }
                            Err(Failure::Protocol(m)) => return Err(sqlstate::fatal("08P01", m)),
                        }
                    }
                    _ => return Err(sqlstate::fatal("08P01", "unexpected authentication message")),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A prepared statement: its text and the number of `$n` it takes.
#[derive(Debug, Clone)]
pub struct Prepared {
    sql: String,
    params: usize,
}

pub struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if sql.len() > MAX_STATEMENT_BYTES {
            return Err(sqlstate::user(error(
                "54000",
                format!("statement too long: {} bytes (the gateway accepts up to {MAX_STATEMENT_BYTES})", sql.len()),
                None,
                None,
            )));
        }
        let parts = statement::split(sql).map_err(|m| sqlstate::user(error(sqlstate::SYNTAX, m, None, None)))?;
        if parts.len() > 1 {
            return Err(sqlstate::user(error(sqlstate::SYNTAX, "cannot insert multiple commands into a prepared statement", None, None)));
        }
        Ok(parts.into_iter().next().map(|s| Prepared { params: statement::parameter_count(&s), sql: s }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(vec![Type::UNKNOWN; stmt.params])
    }

    fn get_result_schema(&self, _stmt: &Prepared, _format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

/// A one-column text result.
fn text_batch(column: &str, values: Vec<String>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values)) as ArrayRef]).expect("one column")
}

fn key_value_batch(rows: Vec<(String, String)>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false), Field::new("value", DataType::Utf8, true)]));
    let (k, v): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(k)) as ArrayRef, Arc::new(StringArray::from(v))]).expect("two columns")
}

/// Rows for the client, in `format`; `fields` fixes the types when the
/// statement was described before (extended protocol).
fn query_response(schema: SchemaRef, batches: Vec<RecordBatch>, format: &Format) -> Result<Response, ErrorInfo> {
    let fields =
        Arc::new(arrow_pg::datatypes::arrow_schema_to_pg_fields(&schema, format, None).map_err(|e| error(sqlstate::INTERNAL, e.to_string(), None, None))?);
    let mut rows = Vec::new();
    for b in batches {
        rows.extend(arrow_pg::datatypes::encode_recordbatch(fields.clone(), b));
    }
    Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter(rows))))
}

/// Cast a batch to the schema its statement was described with.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ErrorInfo> {
    if batch.schema().fields().len() != schema.fields().len() {
        return Err(error(sqlstate::INTERNAL, "internal error (a bug in dpq): the answer does not match its description", None, None));
    }
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { datafusion::arrow::compute::cast(c, f.data_type()) })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(sqlstate::INTERNAL, format!("internal error (a bug in dpq): {e}"), None, None))?;
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| error(sqlstate::INTERNAL, format!("internal error (a bug in dpq): {e}"), None, None))
}

fn parse_on(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Some(true),
        "off" | "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// The privacy metadata of an answer, as NOTICE lines.
fn notices(a: &Answer) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &a.privacy {
        let spent = if p.replayed {
            format!("replayed from ledger entry {} (charged ε={}, δ={}); nothing spent", p.entry.unwrap_or(0), p.charged_epsilon, p.charged_delta)
        } else {
            format!("spent ε={}, δ={} (ledger entry {}, analyst {})", p.epsilon, p.delta, p.entry.unwrap_or(0), p.analyst)
        };
        out.push(format!("dpq: {spent}; dataset budget left ε={}, δ={}", p.remaining_epsilon, p.remaining_delta));
        let noisy: Vec<&str> = a.result.columns.iter().filter(|c| c.noisy).map(|c| c.name.as_str()).collect();
        if !noisy.is_empty() {
            let conf = a.result.rows.first().and_then(|r| r.get(noisy[0])).and_then(|c| c.get("confidence")).and_then(|c| c.as_f64()).unwrap_or(0.95);
            out.push(format!(
                "dpq: {} mechanism, {}; noisy columns {} each come with _stddev, _ci_low and _ci_high ({}% intervals)",
                p.mechanism,
                p.bounding,
                noisy.join(", "),
                conf * 100.0
            ));
        }
    } else {
        out.push("dpq: public data only; nothing spent".into());
    }
    if let Some(text) = a.bias.as_ref().and_then(|b| serde_json::to_value(b).ok()).and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string)) {
        out.push(format!("dpq: bias: {text}"));
    }
    for n in &a.notes {
        out.push(format!("dpq: {n}"));
    }
    out
}

impl Conn {
    fn analyst(&self) -> Result<String, ErrorInfo> {
        match &self.state.lock().unwrap().auth {
            Auth::Done(u, v) => {
                // analysts.toml is read again for every statement: a removed
                // analyst or a changed password ends what an open connection
                // may do (otherwise it would go on, and without a quota)
                if self.shared.verifier_text(u).as_deref() != Some(v.as_str()) {
                    return Err(error(
                        "28000",
                        format!("analyst \"{u}\" was removed from analysts.toml or their password changed"),
                        None,
                        Some("reconnect with the current password".into()),
                    ));
                }
                Ok(u.clone())
            }
            _ => Err(error("28000", "not authenticated", None, None)),
        }
    }

    fn settings(&self) -> Settings {
        self.state.lock().unwrap().settings.clone()
    }

    async fn session(&self) -> Result<Arc<Session>, ErrorInfo> {
        let analyst = self.analyst()?;
        self.shared.session(&analyst).await.map_err(|e| sqlstate::of(&e))
    }

    fn set(&self, name: &str, value: &str) -> Result<(), ErrorInfo> {
        let bad = |why: String| error(sqlstate::INVALID_VALUE, format!("invalid value for parameter \"{name}\": \"{value}\""), Some(why), None);
        let default = value.eq_ignore_ascii_case("default");
        let mut st = self.state.lock().unwrap();
        let s = &mut st.settings;
        let amount = |what: &str| -> Result<Option<Amount>, ErrorInfo> {
            if default {
                return Ok(None);
            }
            value.parse::<Amount>().map(Some).map_err(|e| bad(format!("{what}: {e}")))
        };
        let count = || -> Result<Option<u64>, ErrorInfo> {
            if default {
                return Ok(None);
            }
            match value.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Some(n)),
                _ => Err(bad("a whole number ≥ 1".into())),
            }
        };
        match name {
            "dpq.epsilon" => {
                let e = amount("ε")?;
                if e.is_some_and(|e| e.is_zero()) {
                    return Err(bad("ε must be > 0".into()));
                }
                s.epsilon = e;
            }
            "dpq.delta" => {
                let d = amount("δ")?;
                if d.is_some_and(|d| d >= Amount::ONE) {
                    return Err(bad("δ must be < 1".into()));
                }
                s.delta = d;
            }
            "dpq.confidence" => {
                s.confidence = if default {
                    None
                } else {
                    match value.parse::<f64>() {
                        Ok(c) if c > 0.0 && c < 1.0 => Some(c),
                        _ => return Err(bad("a level strictly between 0 and 1, e.g. 0.95".into())),
                    }
                }
            }
            "dpq.mechanism" => {
                s.mechanism = match value.to_ascii_lowercase().as_str() {
                    "default" => None,
                    "laplace" => Some(MechanismKind::Laplace),
                    "gaussian" => Some(MechanismKind::Gaussian),
                    _ => return Err(bad("laplace or gaussian".into())),
                }
            }
            "dpq.bounds" => {
                s.bounds = match value.to_ascii_lowercase().as_str() {
                    "default" => None,
                    "auto" => Some(true),
                    "fixed" => Some(false),
                    _ => return Err(bad("auto (limits chosen from the data) or fixed (dpq.toml's)".into())),
                }
            }
            "dpq.fresh" => s.fresh = if default { false } else { parse_on(value).ok_or_else(|| bad("on or off".into()))? },
            "dpq.max_rows_per_unit" => s.max_rows_per_unit = count()?,
            "dpq.max_groups_per_unit" => s.max_groups_per_unit = count()?,
            "dpq.max_rows_per_group" => s.max_rows_per_group = count()?,
            n if n.starts_with("dpq.") => {
                return Err(error(
                    sqlstate::UNDEFINED_PARAMETER,
                    format!("unrecognized configuration parameter \"{n}\""),
                    None,
                    Some(format!("dpq's settings: {}", DPQ_SETTINGS.join(", "))),
                ));
            }
            n => {
                st.params.insert(n.to_string(), value.to_string());
            }
        }
        Ok(())
    }

    fn reset(&self, name: &str) {
        let mut st = self.state.lock().unwrap();
        if name == "all" {
            st.settings = Settings::default();
            st.params.clear();
            return;
        }
        let s = &mut st.settings;
        match name {
            "dpq.epsilon" => s.epsilon = None,
            "dpq.delta" => s.delta = None,
            "dpq.confidence" => s.confidence = None,
            "dpq.mechanism" => s.mechanism = None,
            "dpq.bounds" => s.bounds = None,
            "dpq.fresh" => s.fresh = false,
            "dpq.max_rows_per_unit" => s.max_rows_per_unit = None,
            "dpq.max_groups_per_unit" => s.max_groups_per_unit = None,
            "dpq.max_rows_per_group" => s.max_rows_per_group = None,
            other => {
                st.params.remove(other);
            }
        }
    }

    /// The value of a setting as SHOW prints it.
    fn setting(&self, name: &str, session: &Session) -> Option<String> {
        let st = self.state.lock().unwrap();
        let s = &st.settings;
        let d = &session.dataset().config.defaults;
        Some(match name {
            "dpq.epsilon" => s.epsilon.unwrap_or(d.epsilon).to_string(),
            "dpq.delta" => s.delta.unwrap_or(d.delta).to_string(),
            "dpq.confidence" => s.confidence.unwrap_or(d.confidence).to_string(),
            "dpq.mechanism" => format!("{:?}", s.mechanism.unwrap_or(d.mechanism)).to_lowercase(),
            "dpq.bounds" => {
                let fixed_by_limits = s.max_rows_per_unit.is_some() || s.max_groups_per_unit.is_some() || s.max_rows_per_group.is_some();
                if s.bounds.unwrap_or(d.auto_bounds && !fixed_by_limits) { "auto" } else { "fixed" }.to_string()
            }
            "dpq.fresh" => if s.fresh { "on" } else { "off" }.to_string(),
            "dpq.max_rows_per_unit" => s.max_rows_per_unit.unwrap_or(d.max_rows_per_unit).to_string(),
            "dpq.max_groups_per_unit" => s.max_groups_per_unit.unwrap_or(d.max_groups_per_unit).to_string(),
            "dpq.max_rows_per_group" => s.max_rows_per_group.unwrap_or(d.max_rows_per_group).to_string(),
            "dpq.analyst" => match &st.auth {
                Auth::Done(u, _) => u.clone(),
                _ => String::new(),
            },
            other => {
                if let Some(v) = st.params.get(other) {
                    return Some(v.clone());
                }
                match other {
                    "server_version" => "16.6".into(),
                    "server_version_num" => "160006".into(),
                    "server_encoding" | "client_encoding" => "UTF8".into(),
                    "standard_conforming_strings" | "integer_datetimes" => "on".into(),
                    "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => "read committed".into(),
                    "transaction_read_only" | "default_transaction_read_only" => "on".into(),
                    "datestyle" => "ISO, MDY".into(),
                    "timezone" | "time zone" => "UTC".into(),
                    "intervalstyle" => "postgres".into(),
                    "search_path" => "public".into(),
                    "max_identifier_length" => "63".into(),
                    "is_superuser" => "off".into(),
                    "lc_collate" | "lc_ctype" => "C".into(),
                    "extra_float_digits" => "1".into(),
                    "application_name" => String::new(),
                    "statement_timeout" => self.shared.options.statement_timeout.map(|t| format!("{}ms", t.as_millis())).unwrap_or_else(|| "0".into()),
                    _ => return None,
                }
            }
        })
    }

    /// SHOW: a batch.
    async fn show(&self, name: &str) -> Result<RecordBatch, ErrorInfo> {
        let session = self.session().await?;
        match name {
            "dpq.budget" => {
                let status = session.budget().map_err(|e| sqlstate::of(&e))?;
                let mut rows = vec![
                    ("scope".to_string(), "dataset".to_string()),
                    ("epsilon_total".into(), status.budget.epsilon.to_string()),
                    ("epsilon_spent".into(), status.epsilon_spent.to_string()),
                    ("epsilon_remaining".into(), status.remaining_epsilon().to_string()),
                    ("delta_total".into(), status.budget.delta.to_string()),
                    ("delta_spent".into(), status.totals.delta.to_string()),
                    ("delta_remaining".into(), status.remaining_delta().to_string()),
                    ("charges".into(), status.totals.charges.to_string()),
                ];
                let analyst = session.analyst().to_string();
                let mine = session.ledger().and_then(|l| Ok(l.by_analyst()?)).map_err(|e| sqlstate::of(&e))?;
                let spent = mine.iter().find(|(a, _)| *a == analyst).map(|(_, t)| *t).unwrap_or_default();
                rows.push(("analyst".into(), analyst.clone()));
                rows.push(("analyst_epsilon_spent".into(), spent.epsilon.to_string()));
                rows.push(("analyst_delta_spent".into(), spent.delta.to_string()));
                let quota = crate::config::analysts::Analysts::load(&session.dataset().dir).map_err(|e| sqlstate::of(&e.into()))?.quota(&analyst);
                match quota {
                    Some((qe, qd)) => {
                        rows.push(("analyst_epsilon_quota".into(), qe.to_string()));
                        rows.push(("analyst_epsilon_remaining".into(), qe.saturating_sub(spent.epsilon).to_string()));
                        rows.push(("analyst_delta_quota".into(), qd.to_string()));
                    }
                    None => rows.push(("analyst_epsilon_quota".into(), "none (the dataset's budget only)".into())),
                }
                Ok(key_value_batch(rows))
            }
            "dpq.last_release" => {
                let last = self.state.lock().unwrap().last.clone();
                let rows = match last {
                    Some(serde_json::Value::Object(m)) => {
                        m.into_iter().map(|(k, v)| (k, if let serde_json::Value::String(s) = v { s } else { v.to_string() })).collect()
                    }
                    _ => vec![("release".into(), "none yet on this connection".into())],
                };
                Ok(key_value_batch(rows))
            }
            "all" => {
                let mut rows = Vec::new();
                for n in DPQ_SETTINGS.iter().chain(["dpq.analyst"].iter()) {
                    rows.push((n.to_string(), self.setting(n, &session).unwrap_or_default()));
                }
                for n in [
                    "server_version",
                    "server_encoding",
                    "client_encoding",
                    "datestyle",
                    "timezone",
                    "search_path",
                    "standard_conforming_strings",
                    "statement_timeout",
                ] {
                    rows.push((n.to_string(), self.setting(n, &session).unwrap_or_default()));
                }
                Ok(key_value_batch(rows))
            }
            n => match self.setting(n, &session) {
                Some(v) => Ok(text_batch(n, vec![v])),
                None => Err(error(
                    sqlstate::UNDEFINED_PARAMETER,
                    format!("unrecognized configuration parameter \"{n}\""),
                    None,
                    Some("SHOW dpq.budget, SHOW dpq.last_release, SHOW ALL".into()),
                )),
            },
        }
    }

    /// The schema a statement's rows will have (empty: no rows), within the
    /// statement timeout.
    async fn describe(&self, sql: &str) -> Result<SchemaRef, ErrorInfo> {
        guard(sql).await?;
        self.timed(self.describe_inner(sql)).await?
    }

    /// `fut` within the statement timeout (every kind of statement: catalog
    /// queries, explain and describe evaluate public parts too).
    async fn timed<T>(&self, fut: impl std::future::Future<Output = T>) -> Result<T, ErrorInfo> {
        match self.shared.options.statement_timeout {
            Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
                error(
                    sqlstate::TIMEOUT,
                    "canceling statement due to statement timeout",
                    Some(format!("the gateway's statement timeout is {} s", t.as_secs())),
                    Some("ask the data owner to raise [gateway] statement_timeout, or narrow the query".into()),
                )
            }),
            None => Ok(fut.await),
        }
    }

    async fn describe_inner(&self, sql: &str) -> Result<SchemaRef, ErrorInfo> {
        let st = statement::parse_one(sql).map_err(|(m, p)| syntax(sql, m, p))?;
        Ok(match statement::classify(sql, &st, &self.shared.catalog.tables) {
            Kind::Set { .. } | Kind::SetOther | Kind::Reset(_) | Kind::Begin | Kind::Commit | Kind::Rollback | Kind::Noop(_) => Arc::new(Schema::empty()),
            Kind::Show(name) => self.show(&name).await?.schema(),
            Kind::Explain(_) => text_batch("QUERY PLAN", vec![]).schema(),
            Kind::Catalog => self.shared.catalog.describe(sql).await.map_err(|m| error(sqlstate::QUERY, m, None, None))?,
            Kind::Dp => {
                let session = self.session().await?;
                session.describe(sql, &self.settings()).await.map_err(|e| sqlstate::of(&e))?
            }
        })
    }

    /// Run one statement, within the statement timeout.
    async fn run<C>(&self, client: &mut C, sql: &str, format: &Format, described: Option<SchemaRef>) -> Result<Response, ErrorInfo>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        guard(sql).await?;
        self.timed(self.run_inner(client, sql, format, described)).await?
    }

    async fn run_inner<C>(&self, client: &mut C, sql: &str, format: &Format, described: Option<SchemaRef>) -> Result<Response, ErrorInfo>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let st = statement::parse_one(sql).map_err(|(m, p)| syntax(sql, m, p))?;
        let kind = statement::classify(sql, &st, &self.shared.catalog.tables);
        let rows = |batch: RecordBatch| -> Result<Response, ErrorInfo> {
            let batch = match &described {
                Some(s) => conform(batch, s)?,
                None => batch,
            };
            query_response(batch.schema(), vec![batch], format)
        };
        match kind {
            Kind::Set { name, value } => {
                self.set(&name, &value)?;
                Ok(Response::Execution(Tag::new("SET")))
            }
            Kind::SetOther => Ok(Response::Execution(Tag::new("SET"))),
            Kind::Reset(name) => {
                self.reset(&name);
                Ok(Response::Execution(Tag::new("RESET")))
            }
            Kind::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Kind::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Kind::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Kind::Noop(tag) => Ok(Response::Execution(Tag::new(tag))),
            Kind::Show(name) => rows(self.show(&name).await?),
            Kind::Explain(q) => {
                let session = self.session().await?;
                let e = session.explain(&q, &self.settings()).await.map_err(|e| sqlstate::of(&e))?;
                rows(text_batch("QUERY PLAN", e.to_text().lines().map(str::to_string).collect()))
            }
            Kind::Catalog => {
                let (schema, batches) = self.shared.catalog.query(sql).await.map_err(|m| error(sqlstate::QUERY, m, None, None))?;
                let batches = match &described {
                    Some(s) => batches.into_iter().map(|b| conform(b, s)).collect::<Result<Vec<_>, _>>()?,
                    None => batches,
                };
                query_response(described.unwrap_or(schema), batches, format)
            }
            Kind::Dp => {
                let session = self.session().await?;
                let options = self.settings();
                let _running = Running::new(&self.shared);
                let fut = session.query(sql, &options);
                let answer = match self.shared.options.statement_timeout {
                    Some(t) => match tokio::time::timeout(t, fut).await {
                        Ok(r) => r,
                        Err(_) => {
                            log(session.analyst(), self.peer, "statement timeout");
                            return Err(error(
                                sqlstate::TIMEOUT,
                                "canceling statement due to statement timeout",
                                Some(format!(
                                    "the gateway's statement timeout is {} s; a charge already made stays spent and is recorded as a failure",
                                    t.as_secs()
                                )),
                                Some("ask the data owner to raise [gateway] statement_timeout, or narrow the query".into()),
                            ));
                        }
                    },
                    None => fut.await,
                };
                let answer = answer.map_err(|e| {
                    log(session.analyst(), self.peer, &format!("{}: {}", e.kind(), e.to_string().lines().next().unwrap_or("")));
                    sqlstate::of(&e)
                })?;
                if let Some(p) = &answer.privacy {
                    log(
                        session.analyst(),
                        self.peer,
                        &format!("answered (ledger entry {}, ε={}{})", p.entry.unwrap_or(0), p.epsilon, if p.replayed { ", replayed" } else { "" }),
                    );
                }
                for n in notices(&answer) {
                    client.send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(ErrorInfo::new("NOTICE".into(), "00000".into(), n)))).await.map_err(
                        |e| {
                            let e: PgWireError = e.into();
                            error(sqlstate::INTERNAL, e.to_string(), None, None)
                        },
                    )?;
                }
                let mut last =
                    answer.result.privacy.as_ref().map(|p| serde_json::to_value(p).unwrap_or_default()).unwrap_or_else(|| serde_json::json!({"public": true}));
                if let (serde_json::Value::Object(m), Some(b)) = (&mut last, &answer.bias) {
                    m.insert("bias".into(), serde_json::to_value(b).unwrap_or_default());
                }
                // a replay of another analyst's answer does not say who asked it
                if let serde_json::Value::Object(m) = &mut last
                    && m.get("analyst").and_then(|a| a.as_str()).is_some_and(|a| a != session.analyst())
                {
                    m.insert("analyst".into(), serde_json::Value::String("another analyst".into()));
                }
                self.state.lock().unwrap().last = Some(last);
                rows(answer.batch)
            }
        }
    }
}

/// The longest statement text the gateway accepts.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;

/// Parse `sql` once on a thread of its own, within the parser deadline,
/// before the gateway's own inline parses (classification, the catalog's
/// rewrite, parameter types) see it: some malformed texts of ~130 bytes make
/// sqlparser backtrack for minutes, which inline would stall a runtime worker
/// and every client behind it (found by the gateway attack). Over-long texts
/// are refused first.
async fn guard(sql: &str) -> Result<(), ErrorInfo> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(error(
            "54000",
            format!("statement too long: {} bytes (the gateway accepts up to {MAX_STATEMENT_BYTES})", sql.len()),
            None,
            Some("split the request into smaller statements".into()),
        ));
    }
    let text = sql.to_string();
    crate::engine::analyze::parse_on_thread(move || {
        let _ = datafusion::sql::sqlparser::parser::Parser::parse_sql(&datafusion::sql::sqlparser::dialect::PostgreSqlDialect {}, &text);
    })
    .await
    .map_err(|e| error(sqlstate::SYNTAX, e.to_string(), None, None))
}

/// A syntax error with its position (1-based, in characters, as PostgreSQL reports).
fn syntax(sql: &str, message: String, at: Option<usize>) -> ErrorInfo {
    let mut e = error(sqlstate::SYNTAX, format!("syntax error: {message}"), None, None);
    if let Some(b) = at {
        e.position = Some((sql[..b.min(sql.len())].chars().count() + 1).to_string());
    }
    e
}

#[async_trait]
impl SimpleQueryHandler for Conn {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.analyst().map_err(sqlstate::user)?;
        let parts = match statement::split(query) {
            Ok(p) => p,
            Err(m) => return Ok(vec![Response::Error(Box::new(error(sqlstate::SYNTAX, m, None, None)))]),
        };
        let mut out = Vec::new();
        for sql in parts {
            match self.run(client, &sql, &Format::UnifiedText, None).await {
                Ok(r) => out.push(r),
                Err(e) => {
                    // like PostgreSQL: the rest of the request is not run
                    out.push(Response::Error(Box::new(e)));
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(Response::EmptyQuery);
        }
        Ok(out)
    }
}

impl Conn {
    /// The statement with its bound parameters as literals.
    async fn bound_sql(&self, portal: &Portal<Prepared>) -> Result<String, ErrorInfo> {
        let stmt = &portal.statement;
        if stmt.statement.params == 0 {
            return Ok(stmt.statement.sql.clone());
        }
        let types = self.parameter_types(stmt).await;
        let mut literals = Vec::new();
        for (i, ty) in types.iter().enumerate() {
            let v = portal.parameters.get(i).cloned().flatten();
            let lit = super::params::literal(v.as_deref(), ty, portal.parameter_format.is_binary(i)).map_err(|m| {
                error(
                    if m.contains("not supported") { sqlstate::UNSUPPORTED } else { sqlstate::INVALID_VALUE },
                    format!("parameter ${}: {m}", i + 1),
                    None,
                    None,
                )
            })?;
            literals.push(lit);
        }
        statement::substitute(&stmt.statement.sql, &literals).map_err(|m| error(sqlstate::INVALID_VALUE, m, None, None))
    }

    /// Declared types, else inferred over the declared (empty) tables, else text.
    async fn parameter_types(&self, stmt: &StoredStatement<Prepared>) -> Vec<Type> {
        let n = stmt.statement.params;
        let inferred = match guard(&stmt.statement.sql).await {
            Ok(()) => self.timed(self.shared.catalog.parameter_types(&stmt.statement.sql, n)).await.unwrap_or_else(|_| vec![None; n]),
            Err(_) => vec![None; n],
        };
        (0..n)
            .map(|i| match stmt.parameter_types.get(i).cloned().flatten() {
                Some(t) if t != Type::UNKNOWN => t,
                _ => super::params::pg_type(inferred.get(i).and_then(|t| t.as_ref())),
            })
            .collect()
    }

    async fn fields(&self, sql: &str, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
        let schema = self.describe(sql).await.map_err(sqlstate::user)?;
        arrow_pg::datatypes::arrow_schema_to_pg_fields(&schema, format, None)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Conn {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(&self, _client: &mut C, target: &StoredStatement<Prepared>) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.analyst().map_err(sqlstate::user)?;
        let types = self.parameter_types(target).await;
        // the result's columns: described with NULLs for the parameters (their
        // values do not change the columns)
        let nulls: Vec<String> = (0..target.statement.params).map(|_| "NULL".to_string()).collect();
        let sql = statement::substitute(&target.statement.sql, &nulls).map_err(|m| sqlstate::user(error(sqlstate::INVALID_VALUE, m, None, None)))?;
        let fields = self.fields(&sql, &Format::UnifiedText).await?;
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(&self, _client: &mut C, target: &Portal<Prepared>) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.analyst().map_err(sqlstate::user)?;
        let sql = self.bound_sql(target).await.map_err(sqlstate::user)?;
        Ok(DescribePortalResponse::new(self.fields(&sql, &target.result_column_format).await?))
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.analyst().map_err(sqlstate::user)?;
        let sql = self.bound_sql(portal).await.map_err(sqlstate::user)?;
        // the client may have described the portal: rows must have those types
        let described = self.describe(&sql).await.map_err(sqlstate::user)?;
        let described = if described.fields().is_empty() { None } else { Some(described) };
        self.run(client, &sql, &portal.result_column_format, described).await.map_err(sqlstate::user)
    }
}
