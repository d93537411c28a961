//! Accuracy against the peers: the three questions of the side-by-side run
//! (counts per key, counts per hour, mean per cohort with a join) at ε = 1, on
//! two data sets the project makes, with dpq's defaults. The figure is the
//! mean relative error over the cells against the true (unbounded, noiseless)
//! answer, averaged over R releases; the peers' figures are the ones measured
//! in the side-by-side run (issue 15), and the target is half the best peer's.
//!
//! Run: `cargo bench --bench accuracy` (options: --runs R, --events N for the
//! generated logs). Data is generated once under target/dpq-bench/accuracy/.
//!
//! * **Event logs** — `dpq generate` (heavy-tailed activity per person, diurnal
//!   hours, emoji from the catalogue), N events.
//! * **MovieLens-shaped** — ≈ 1 000 people and 100 000 ratings: at least 20
//!   ratings per person, heavy-tailed (log-normal) activity, rated in session
//!   bursts of minutes at a person's usual hours, ratings 1–5 with MovieLens'
//!   marginal shares, seven age groups.

use std::path::{Path, PathBuf};

use datafusion::arrow::util::display::array_value_to_string;
use dpq::dataset::Dataset;
use dpq::generate::{FileFormat, GenerateOptions};
use dpq::ingest::IngestOptions;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

struct Question {
    data: &'static str,
    name: &'static str,
    truth: &'static str,
    dp: &'static str,
    /// The side-by-side run's figures: dpq before (with --auto-bounds), best peer.
    before: f64,
    best_peer: f64,
    peer: &'static str,
}

const QUESTIONS: &[Question] = &[
    Question {
        data: "movielens",
        name: "counts per rating",
        truth: "SELECT rating, COUNT(*) FROM ratings GROUP BY rating",
        dp: "SELECT rating, COUNT(*) FROM ratings GROUP BY rating",
        before: 0.080,
        best_peer: 0.60,
        peer: "all peers",
    },
    Question {
        data: "movielens",
        name: "counts per hour",
        truth: "SELECT date_part('hour', ts) AS h, COUNT(*) FROM ratings GROUP BY h",
        dp: "SELECT date_part('hour', ts) AS h, COUNT(*) FROM ratings GROUP BY h",
        before: 0.178,
        best_peer: 0.133,
        peer: "SmartNoise",
    },
    Question {
        data: "movielens",
        name: "mean rating per age group (join)",
        truth: "SELECT u.age_group, AVG(r.rating) FROM ratings r JOIN users u ON r.user_id = u.user_id GROUP BY u.age_group",
        dp: "SELECT u.age_group, AVG(r.rating) FROM ratings r JOIN users u ON r.user_id = u.user_id GROUP BY u.age_group",
        before: 0.046,
        best_peer: 0.017,
        peer: "best of 1.7–4 %",
    },
    Question {
        data: "events",
        name: "counts per emoji",
        truth: "SELECT emoji, COUNT(*) FROM messages WHERE emoji IS NOT NULL GROUP BY emoji",
        dp: "SELECT emoji, COUNT(*) FROM messages WHERE emoji IS NOT NULL GROUP BY emoji",
        before: 0.244,
        best_peer: 0.386,
        peer: "best peer",
    },
    Question {
        data: "events",
        name: "counts per hour",
        truth: "SELECT date_part('hour', ts) AS h, COUNT(*) FROM messages GROUP BY h",
        dp: "SELECT date_part('hour', ts) AS h, COUNT(*) FROM messages GROUP BY h",
        before: 0.245,
        best_peer: 0.177,
        peer: "best peer",
    },
    Question {
        data: "events",
        name: "mean length per age group (join)",
        truth: "SELECT u.age_group, AVG(m.length) FROM messages m JOIN users u ON m.user_id = u.user_id GROUP BY u.age_group",
        dp: "SELECT u.age_group, AVG(m.length) FROM messages m JOIN users u ON m.user_id = u.user_id GROUP BY u.age_group",
        before: f64::NAN,
        best_peer: f64::NAN,
        peer: "(not in the side-by-side run)",
    },
];

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1).cloned())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dpq-bench/accuracy")
}

const MOVIELENS_TOML: &str = r#"[budget]
epsilon = 1000000
delta = 1e-6

[defaults]
epsilon = 1
delta = 1e-8

[tables.users]
privacy_unit = "user_id"
one_row_per_unit = true
[tables.users.columns.user_id]
type = "int64"
[tables.users.columns.age_group]
type = "string"
domain = { values = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"] }

[tables.ratings]
privacy_unit = "user_id"
[tables.ratings.columns.user_id]
type = "int64"
[tables.ratings.columns.movie_id]
type = "int64"
[tables.ratings.columns.rating]
type = "int64"
bounds = [1, 5]
domain = { values = [1, 2, 3, 4, 5] }
[tables.ratings.columns.ts]
type = "timestamp"
"#;

/// A MovieLens-shaped data set (see the module documentation), ingested once.
fn movielens() -> PathBuf {
    let dir = root().join("movielens");
    let data = dir.join("data");
    if data.join("tables/ratings/manifest.json").exists() {
        return data;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("dpq.toml"), MOVIELENS_TOML).unwrap();
    let id = Dataset::open(&data).unwrap().id("bench").unwrap();
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(1997);
    let people = 943;
    let ages = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"];
    let age_w = [0.03, 0.18, 0.35, 0.20, 0.09, 0.08, 0.07];
    let rating_w = [0.061, 0.114, 0.271, 0.341, 0.213];
    let pick = |r: &mut rand_chacha::ChaCha20Rng, w: &[f64]| {
        let mut u: f64 = r.random();
        for (i, x) in w.iter().enumerate() {
            if u < *x {
                return i;
            }
            u -= x;
        }
        w.len() - 1
    };
    let activity = LogNormal::new(4.1, 0.95).unwrap();
    let mut users = String::from("user_id,age_group\n");
    let mut ratings = String::from("user_id,movie_id,rating,ts\n");
    let t0 = 874_724_710i64; // 1997-09-20, as MovieLens-100k
    let mut total = 0;
    for u in 0..people {
        let age = pick(&mut r, &age_w);
        users.push_str(&format!("{u},{}\n", ages[age]));
        let n = (20.0 + Distribution::<f64>::sample(&activity, &mut r)).min(740.0) as usize;
        // a person's usual hour, sessions of a few minutes to an hour
        let usual: f64 = r.random_range(0.0..24.0);
        let mut left = n;
        // younger raters lean slightly higher, as in MovieLens
        let shift = if age <= 1 {
            0.05
        } else if age >= 5 {
            -0.03
        } else {
            0.0
        };
        while left > 0 {
            let burst = left.min(r.random_range(5..60));
            let day = r.random_range(0..214i64);
            let hour = (usual + r.random_range(-3.0..3.0f64)).rem_euclid(24.0);
            let mut t = t0 + day * 86_400 + (hour * 3600.0) as i64;
            for _ in 0..burst {
                let mut w = rating_w;
                w[3] += shift;
                w[4] -= shift;
                let rating = pick(&mut r, &w) + 1;
                let movie = (r.random::<f64>().powi(3) * 1682.0) as i64;
                let ts = chrono::DateTime::from_timestamp(t, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ");
                ratings.push_str(&format!("{u},{movie},{rating},{ts}\n"));
                t += r.random_range(10..120);
            }
            left -= burst;
            total += burst;
        }
    }
    std::fs::write(dir.join("users.csv"), users).unwrap();
    std::fs::write(dir.join("ratings.csv"), ratings).unwrap();
    let ds = Dataset::open(&data).unwrap();
    for t in ["users", "ratings"] {
        let o = IngestOptions {
            dataset: Some(id.clone()),
            table: t.into(),
            files: vec![dir.join(format!("{t}.csv"))],
            force: false,
            format: None,
            progress: dpq::progress::silent(),
        };
        dpq::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
    }
    eprintln!("movielens-shaped: {people} people, {total} ratings");
    data
}

/// Generated event logs of about `events` events, ingested once.
fn events(events: u64) -> PathBuf {
    let dir = root().join(format!("events-{events}"));
    let data = dir.join("data");
    if data.join("tables/messages/manifest.json").exists() {
        return data;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ds = Dataset::init_with_budget(&data, "1000000000".parse().unwrap(), "1e-6".parse().unwrap()).unwrap();
    let id = ds.id("bench").unwrap();
    let users = (events as f64 / (365.0 * 2.35)).ceil() as u64;
    let logs = dir.join("logs");
    dpq::generate::generate(&GenerateOptions { users, days: 365, out: logs.clone(), format: FileFormat::Parquet, messages_per_day: 1.0, ..Default::default() })
        .unwrap();
    for t in ["emoji_catalog", "users", "messages"] {
        let o = IngestOptions {
            dataset: Some(id.clone()),
            table: t.into(),
            files: vec![logs.join(format!("{t}.parquet"))],
            force: false,
            format: None,
            progress: dpq::progress::silent(),
        };
        dpq::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
    }
    data
}

fn norm(s: &str) -> String {
    s.parse::<f64>().map(|f| format!("{f}")).unwrap_or_else(|_| s.to_string())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: u64 = arg("--runs").and_then(|s| s.parse().ok()).unwrap_or(10);
    let n_events: u64 = arg("--events").and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let sets = [("movielens", movielens()), ("events", events(n_events))];
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("accuracy at ε = 1, dpq's defaults, mean relative error over the cells, {runs} releases each");
    println!("{:<12} {:<34} {:>8} {:>12} {:>10} {:>10} {:>8}  limits (last run)", "data", "question", "dpq now", "dpq before", "best peer", "target", "met");
    rt.block_on(async {
        for (name, data) in &sets {
            let ds = Dataset::open(data).unwrap();
            let session = dpq::Session::open(data).await.unwrap();
            let ctx = datafusion::prelude::SessionContext::new();
            for t in ds.config.tables.keys() {
                let p = data.join("tables").join(t);
                if p.join("manifest.json").exists() {
                    ctx.register_parquet(t.as_str(), p.to_str().unwrap(), datafusion::prelude::ParquetReadOptions::default()).await.unwrap();
                }
            }
            for q in QUESTIONS.iter().filter(|q| q.data == *name) {
                let batches = ctx.sql(q.truth).await.unwrap().collect().await.unwrap();
                let mut truth = std::collections::HashMap::new();
                for b in &batches {
                    for i in 0..b.num_rows() {
                        let k = norm(&array_value_to_string(b.column(0), i).unwrap());
                        let v: f64 = array_value_to_string(b.column(1), i).unwrap().parse().unwrap();
                        truth.insert(k, v);
                    }
                }
                let o = dpq::QueryOptions::new().epsilon("1".parse().unwrap()).delta("1e-8".parse().unwrap()).fresh(true);
                let mut rels = Vec::new();
                let mut limits = String::new();
                for _ in 0..runs {
                    let r = match session.query(q.dp, &o).await {
                        Ok(a) => a.result,
                        Err(e) => {
                            // (dpq's panic hook withholds panic messages: print, then stop)
                            eprintln!("{name}: {}: {e}", q.name);
                            std::process::exit(1);
                        }
                    };
                    limits = r.bounding_used.clone().unwrap_or_default();
                    let key_col = &r.columns[0].name;
                    let val_col = &r.columns[1].name;
                    let mut got = std::collections::HashMap::new();
                    for row in &r.rows {
                        let k = match &row[key_col] {
                            serde_json::Value::String(s) => norm(s),
                            v => norm(&v.to_string()),
                        };
                        let v = row[val_col]["value"].as_f64().unwrap_or(0.0);
                        got.insert(k, v);
                    }
                    for (k, t) in &truth {
                        if *t > 0.0 {
                            rels.push((got.get(k).copied().unwrap_or(0.0) - t).abs() / t);
                        }
                    }
                }
                let mre = rels.iter().sum::<f64>() / rels.len().max(1) as f64;
                let target = q.best_peer / 2.0;
                let met = if target.is_nan() {
                    "-".to_string()
                } else if mre <= target {
                    "yes".into()
                } else {
                    "no".into()
                };
                let pct = |x: f64| if x.is_nan() { "-".to_string() } else { format!("{:.1}%", x * 100.0) };
                println!(
                    "{:<12} {:<34} {:>8} {:>12} {:>10} {:>10} {:>8}  {}",
                    name,
                    q.name,
                    pct(mre),
                    pct(q.before),
                    pct(q.best_peer),
                    pct(target),
                    met,
                    limits
                );
                let _ = q.peer;
            }
        }
    });
}
