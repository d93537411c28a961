//! Everything that touches DataFusion: sessions, the DP rewrite, execution.
//!
//! [`Engine::prepare`] parses and analyses a query and calibrates its noise
//! without reading private rows (this is all `dpq explain` needs);
//! [`Engine::run`] charges the ledger, executes the bounded plan, releases the
//! noisy answer and stores it for replay before returning it.

pub mod analyze;
pub mod bound_op;
pub mod bounded;
#[cfg(feature = "ballista")]
pub mod cluster;
pub mod error;
pub mod explain;
pub mod guard;
pub mod one_shuffle;
pub mod plan;
pub mod protocol;
pub mod release;
pub mod result;
pub mod session;
pub mod total;

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::ledger::{ChargeRequest, Ledger};
use crate::privacy::amount::Amount;
use crate::privacy::mechanisms::Mechanism;
use crate::privacy::mechanisms::auto_bounds::Limits;
use analyze::{Analysis, DpQuery, PublicDomains};
pub use error::{EngineError, Result};
use plan::{Calibration, QueryParams};
use result::{Bias, Privacy, QueryResult};
use session::Sessions;

/// A query, analysed and calibrated.
#[derive(Debug, Clone)]
pub enum Prepared {
    Public { plan: datafusion::logical_expr::LogicalPlan, tables: BTreeSet<String>, sql: String },
    Dp { query: Box<DpQuery>, cal: Calibration, params: QueryParams, sql: String, key: String, data_version: String },
}

pub struct Engine {
    pub sessions: Sessions,
    domains: PublicDomains,
}

impl Engine {
    /// Open the engine over a dataset (reads manifests and public key domains).
    #[cfg(test)]
    pub async fn open(ds: &Dataset, memory_limit: Option<u64>) -> Result<Engine> {
        Engine::open_on(ds, memory_limit, session::Backend::Local).await
    }

    /// Open the engine with bounded plans executing on `backend`.
    pub async fn open_on(ds: &Dataset, memory_limit: Option<u64>, backend: session::Backend) -> Result<Engine> {
        let mut sessions = Sessions::new(&ds.dir, &ds.config, memory_limit)?;
        sessions.backend = backend;
        let ctx = sessions.planning()?;
        let loaded: BTreeSet<String> = sessions.tables.keys().cloned().collect();
        let domains = analyze::load_public_domains(&ctx, &ds.config, &loaded).await?;
        Ok(Engine { sessions, domains })
    }

    fn data_version(&self, tables: &BTreeSet<String>) -> String {
        let mut h = Sha256::new();
        for t in tables {
            h.update(t.as_bytes());
            h.update(self.sessions.version(t).unwrap_or_default().as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Parse, analyse and calibrate. Reads no private rows.
    pub async fn prepare(&self, sql: &str, params: &QueryParams) -> Result<Prepared> {
        if !(params.confidence > 0.0 && params.confidence < 1.0) {
            return Err(EngineError::Invalid(format!("--confidence must be strictly between 0 and 1 (got {})", params.confidence)));
        }
        let ctx = self.sessions.planning()?;
        let config = &self.sessions.config;
        match analyze::analyze(&ctx, config, &self.domains, sql).await? {
            Analysis::Public { plan, tables } => Ok(Prepared::Public { plan, tables, sql: sql.to_string() }),
            Analysis::Dp(q) => {
                release::check_post_processing(&q)?;
                let (c, l0, linf) = plan::configured_bounds(&q, params);
                let (family, alt, why) = plan::choose_family(&q, params, c, l0, linf);
                let cal = plan::calibrate(&q, params, family, alt, why)?;
                // the data read: the tables scanned and the public tables that give key domains
                let mut read = q.tables.clone();
                read.extend(self.domains.keys().map(|(t, _)| t.clone()));
                let data_version = self.data_version(&read);
                let key = replay_key(&q, &cal, params, &data_version);
                Ok(Prepared::Dp { query: q, cal, params: params.clone(), sql: sql.to_string(), key, data_version })
            }
        }
    }

    /// Answer a prepared query: replay, or charge → execute → release → store
    /// (the protocol of [`protocol::release`]).
    pub async fn run(&self, prepared: &Prepared, ledger: &mut Ledger, fresh: bool, caller: &Caller) -> Result<QueryResult> {
        match prepared {
            Prepared::Public { plan, .. } => {
                let ctx = self.sessions.planning()?;
                let batches = ctx.execute_logical_plan(plan.clone()).await.map_err(error::sql)?.collect().await.map_err(error::sql)?;
                let mut r = release::plain_result(&batches);
                r.notes.push("this query reads only public tables: answered exactly, nothing charged".into());
                Ok(r)
            }
            Prepared::Dp { query, cal, params, sql, key, data_version } => {
                let request = ChargeRequest {
                    kind: "query".into(),
                    text: sql.clone(),
                    query_key: Some(key.clone()),
                    releases: cal.releases(),
                    params: serde_json::json!({
                        "mechanism": cal.mechanism,
                        "bounding": cal.family,
                        "confidence": cal.confidence,
                        "auto_bounds": params.auto_bounds,
                        "unit": query.unit_name,
                    }),
                    data_version: data_version.clone(),
                    analyst: caller.analyst.clone(),
                    quota: caller.quota,
                    fresh,
                };
                let released = protocol::release(ledger, request, fresh, |charge| async move {
                    let mut r = self.compute(query, cal, crate::privacy::samplers::fresh_seed()).await?;
                    r.privacy = Some(privacy_of(cal, query, &charge, r.bounding_used.clone(), &caller.analyst));
                    // the result entry records the bounds actually applied (after any --auto-bounds release)
                    let recorded = serde_json::json!({
                        "bounding_used": r.bounding_used,
                        "family": r.family,
                        "tables": query.tables,
                        "notes": r.notes,
                    });
                    Ok((serde_json::to_value(&r).expect("results serialise"), recorded))
                })
                .await?;
                let mut r: QueryResult = serde_json::from_value(released.value)
                    .map_err(|e| error::internal(format!("the stored result of entry {} does not read: {e}", released.charge.entry)))?;
                if let Some(p) = &mut r.privacy {
                    p.replayed = released.replayed;
                    p.result_hash = Some(released.result_hash.clone());
                    p.remaining_epsilon = released.status.remaining_epsilon().to_string();
                    p.remaining_delta = released.status.remaining_delta().to_string();
                    if released.replayed {
                        p.epsilon = "0".into();
                        p.delta = "0".into();
                    }
                }
                if released.replayed {
                    r.notes.push(format!(
                        "replayed the stored answer of ledger entry {}: asking again costs nothing and returns the same noise; use --fresh to draw new noise (and pay again)",
                        released.charge.entry
                    ));
                }
                Ok(r)
            }
        }
    }

    /// Execute and release with the randomness of `seed`.
    pub async fn compute(&self, q: &DpQuery, cal: &Calibration, seed: [u8; 32]) -> Result<QueryResult> {
        self.compute_with_limits(q, cal, seed, None).await
    }

    /// [`Engine::compute`], with the limits another answer chose from the data
    /// (`given`: the limits and what chose them) used instead of a pick of this
    /// query's own — post-processing of that answer's DP release, so sections
    /// of a report that must agree are bounded alike. Only under auto-bounds
    /// (whose charge covers noise calibrated on any limits); the people count
    /// and the disclosure are still released.
    pub async fn compute_with_limits(&self, q: &DpQuery, cal: &Calibration, seed: [u8; 32], given: Option<(Limits, String)>) -> Result<QueryResult> {
        let stream = |n: u64| {
            let mut r = crate::privacy::samplers::seeded_rng(seed);
            r.set_stream(n);
            r
        };
        // bounding's randomness is keyed by a seed derived one-way from the
        // query's (it travels to executors; the noise's does not)
        let bseed = bound_op::bounding_seed(&seed);
        let mut groups = bounded::Groups::new(q)?;
        let mut cal = cal.clone();
        let mut notes = Vec::new();
        let auto = cal.auto_bounds.clone();
        let mut noisy_people = None;
        if let Some(ab) = &auto {
            let stats = bounded::stats_plan(q, &cal)?;
            let shapes = bounded::shape_histogram(&self.sessions, &stats).await?;
            let (c, l0, linf) = plan::configured_bounds(q, &cal.params);
            let fixed = Limits { max_rows_per_unit: c, max_groups_per_unit: l0, max_rows_per_group: linf };
            let people = ab.noisy_people(&shapes, &mut stream(4)).map_err(|e| error::internal(format!("auto-bounds: {e}")))?;
            noisy_people = Some(people);
            let spent = crate::privacy::accountant::basic(&ab.releases()).0;
            let informative = ab.informative(people);
            let limits = match (&given, informative) {
                // a group limit no larger than this query's public cap
                (Some((l, _)), _) => Limits { max_groups_per_unit: l.max_groups_per_unit.min(ab.groups.unwrap_or(u64::MAX).max(1)), ..*l },
                (None, true) => ab.choose(&shapes, fixed, people, &mut stream(0)).map_err(|e| error::internal(format!("auto-bounds: {e}")))?,
                (None, false) => fixed,
            };
            let (recal, fallback) = cal.with_limits(q, limits)?;
            notes.push(match (fallback, informative) {
                (Some(why), _) => why,
                (None, _) if given.is_some() => {
                    format!("bounded with the contribution limits {} chose, so the two agree: {}", given.as_ref().map(|g| g.1.as_str()).unwrap_or(""), recal.family.describe())
                }
                (None, true) => format!(
                    "the contribution limits were chosen from the data with ε={spent} (a DP release, part of this charge) to minimise bias plus noise: {}",
                    recal.family.describe()
                ),
                (None, false) => format!(
                    "too few people to choose the contribution limits from the data at this ε (about {people:.0}; choosing needs about {:.0} at ε={spent}, which was spent on the attempt and on what the limits cut): dpq.toml's fixed limits were used ({}); a larger ε lets dpq choose",
                    crate::privacy::mechanisms::auto_bounds::MIN_RESOLUTIONS * ab.resolution(),
                    recal.family.describe()
                ),
            });
            cal = recal;
        }
        let stats = bounded::stats_plan(q, &cal)?;
        let mut people: Option<bounded::PeopleCut> = None;
        let totals = if needs_counts_pass(q, &cal) {
            let (t, p) = bounded::bounded_totals(&self.sessions, &stats, &mut groups, &cal, 0, &bseed, 1).await?;
            people = Some(p);
            t
        } else {
            HashMap::new()
        };
        let mut qtotals: Vec<Option<HashMap<u32, bounded::GroupTotal>>> = vec![None; q.aggs.len()];
        for (j, ap) in cal.aggs.iter().enumerate() {
            if let Some(m) = ap.mechanism.quantile() {
                let qp = bounded::quantile_plan(q, &cal, j)?;
                let (t, p) = bounded::bounded_totals(&self.sessions, &qp, &mut groups, &cal, m.domain.bins, &bseed, 10 + j as u64).await?;
                people.get_or_insert(p);
                qtotals[j] = Some(t);
            }
        }
        let disclosure = match (&auto, people) {
            (Some(ab), Some(p)) => {
                let people = noisy_people.ok_or_else(|| error::internal("auto-bounds: the people count was not released"))?;
                Some(ab.disclose(people, p.cut, &mut stream(3)).map_err(|e| error::internal(format!("auto-bounds: {e}")))?)
            }
            _ => None,
        };
        let mut noise_rng = stream(2);
        let released_ids = release::released_groups(&groups, &totals, &cal, &mut noise_rng)?;
        let slots: Vec<Option<usize>> = (0..q.aggs.len()).map(|j| bounded::value_slot(&stats, j)).collect();
        let mut released = Vec::new();
        for id in released_ids {
            let qh: Vec<Option<&bounded::GroupTotal>> = qtotals.iter().map(|t| t.as_ref().and_then(|m| m.get(&id))).collect();
            let cells = release::release_group(q, &cal, totals.get(&id), &qh, &slots, &mut noise_rng)?;
            released.push((id, cells));
        }
        let mut r = release::post_process(q, &groups, &released, &cal).await?;
        r.notes.extend(notes);
        let bounding = cal.family.describe();
        r.bias = Some(match &disclosure {
            Some(d) => Bias::estimated(
                d,
                &bounding,
                q.aggs.iter().all(|a| matches!(a.kind, analyze::AggKind::Avg | analyze::AggKind::Variance { .. } | analyze::AggKind::Quantile { .. })),
            ),
            // structure bounds everyone already (one row per person, or counting people once)
            None if !plan::needs_auto_bounds(q, plan::auto_choice(q, &cal.params)) => Bias::none(),
            None => Bias::not_estimated(&bounding),
        });
        r.notes.push(format!("intervals are {:.0}% confidence intervals for the noise only; bias from bounding is stated separately", cal.confidence * 100.0,));
        r.bounding_used = Some(bounding);
        r.family = Some(cal.family);
        Ok(r)
    }
}

/// Version of the replay key: bump when what a key covers changes.
pub const REPLAY_KEY_FORMAT: &str = "dpq-replay-key-3";

/// The replay key: everything the answer depends on, so that a stored answer
/// is replayed only for exactly the same question on exactly the same inputs —
/// the normalised plan, the parameters, every group key's domain (values and
/// source), every aggregate's bounds, grid and noise, the bounding family and
/// partition selection, and the versions of every table read (including public
/// domain tables).
fn replay_key(q: &DpQuery, cal: &Calibration, params: &QueryParams, data_version: &str) -> String {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    put(REPLAY_KEY_FORMAT);
    put(&q.plan.display_indent().to_string());
    // the display does not escape literals or names ('a") OR x = ("b' prints like two
    // comparisons): every expression's Debug form, which escapes them, is hashed too
    let _ = datafusion::common::tree_node::TreeNode::apply(&q.plan, |node| {
        for e in node.expressions() {
            put(&format!("{e:?}"));
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    put(&serde_json::to_string(params).expect("params serialise"));
    for k in &q.keys {
        put(&k.display);
        put(&k.data_type.to_string());
        match &k.domain {
            Some(d) => {
                put(&d.source);
                for v in &d.values {
                    put(&v.to_string());
                }
            }
            None => put("no domain"),
        }
    }
    put(&format!("{:?}", cal.family));
    for (a, ap) in q.aggs.iter().zip(&cal.aggs) {
        put(&format!("{:?} {:?} {} {:?}", a.kind, a.bounds, a.integer, ap.mechanism.grid()));
        for c in ap.mechanism.describe() {
            put(&format!("{} {} {} {}", c.what, c.sensitivity, c.noise, c.cost));
        }
    }
    if let Some(s) = &cal.selection {
        put(&format!("selection ε={} δ={} L0={}", s.epsilon, s.delta, s.groups_per_unit));
    }
    put(data_version);
    hex::encode(h.finalize())
}

/// Whether a query needs the counts/sums pass: for partition selection and for
/// every aggregate but a quantile. A query of quantiles over declared domains
/// (e.g. a per-person median by cohort) reads its data once.
pub fn needs_counts_pass(q: &DpQuery, cal: &Calibration) -> bool {
    cal.selection.is_some() || q.aggs.iter().any(|a| !matches!(a.kind, analyze::AggKind::Quantile { .. }))
}

fn privacy_of(cal: &Calibration, q: &DpQuery, charge: &protocol::Charge, bounding: Option<String>, analyst: &str) -> Privacy {
    Privacy {
        epsilon: charge.epsilon.to_string(),
        delta: charge.delta.to_string(),
        charged_epsilon: charge.epsilon.to_string(),
        charged_delta: charge.delta.to_string(),
        remaining_epsilon: charge.status.remaining_epsilon().to_string(),
        remaining_delta: charge.status.remaining_delta().to_string(),
        accountant: charge.status.budget.rule.to_string(),
        entry: Some(charge.entry),
        replayed: false,
        mechanism: cal.mechanism.to_string(),
        bounding: bounding.unwrap_or_else(|| cal.family.describe()),
        unit: q.unit_name.clone(),
        ledger_hash: Some(charge.hash.clone()),
        result_hash: None,
        analyst: analyst.to_string(),
    }
}

/// Who is asking, and their quota (ε, δ) if they have one.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub analyst: String,
    pub quota: Option<(Amount, Amount)>,
}

/// Resolve per-query parameters from dpq.toml defaults and overrides.
#[allow(clippy::too_many_arguments)]
pub fn params_from(
    config: &crate::config::Config,
    epsilon: Option<Amount>,
    delta: Option<Amount>,
    max_rows_per_unit: Option<u64>,
    max_groups_per_unit: Option<u64>,
    max_rows_per_group: Option<u64>,
    mechanism: Option<crate::config::MechanismKind>,
    confidence: Option<f64>,
    auto_bounds: Option<bool>,
) -> QueryParams {
    let d = &config.defaults;
    // limits given for this query are used as they are
    let given = max_rows_per_unit.is_some() || max_groups_per_unit.is_some() || max_rows_per_group.is_some();
    let auto_bounds = auto_bounds.unwrap_or(d.auto_bounds && !given);
    QueryParams {
        epsilon: epsilon.unwrap_or(d.epsilon),
        delta: delta.unwrap_or(d.delta),
        max_rows_per_unit,
        max_groups_per_unit,
        max_rows_per_group,
        default_rows_per_unit: d.max_rows_per_unit,
        default_groups_per_unit: d.max_groups_per_unit,
        default_rows_per_group: d.max_rows_per_group,
        mechanism: mechanism.unwrap_or(d.mechanism),
        partition_selection: d.partition_selection,
        confidence: confidence.unwrap_or(d.confidence),
        auto_bounds,
        auto_bounds_share: d.auto_bounds_share,
    }
}
#[cfg(test)]
mod test;
