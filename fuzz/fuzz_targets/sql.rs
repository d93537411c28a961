//! The SQL planner/rewriter on arbitrary SQL over the demo schema: never panics,
//! and never executes an unrewritten plan over private tables (the planning
//! session has no scan token; execution is not attempted here, and a plan the
//! rewriter accepts must pass `explain`, which builds the bounded plan).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Fixture {
    rt: tokio::runtime::Runtime,
    engine: dpq::engine::Engine,
    ds: dpq::dataset::Dataset,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dpq-fuzz-{}", std::process::id()));
        let data = dir.join("data");
        let ds = dpq::dataset::Dataset::init(&data).unwrap();
        let logs = dir.join("logs");
        let o = dpq::generate::GenerateOptions { users: 20, days: 3, out: logs.clone(), format: dpq::generate::FileFormat::Parquet, ..Default::default() };
        dpq::generate::generate(&o).unwrap();
        for t in ["emoji_catalog", "users", "messages", "calls", "payments"] {
            let o = dpq::ingest::IngestOptions { dataset: None, table: t.into(), files: vec![logs.join(format!("{t}.parquet"))], force: false, format: None, progress: false };
            dpq::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let engine = rt.block_on(dpq::engine::Engine::open(&ds, None)).unwrap();
        Fixture { rt, engine, ds }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    if sql.len() > 4096 {
        return;
    }
    let f = fixture();
    let params = dpq::engine::params_from(&f.ds.config, None, Some("1e-8".parse().unwrap()), None, None, None, None, None, false);
    f.rt.block_on(async {
        if let Ok(p) = f.engine.prepare(sql, &params).await {
            let _ = dpq::engine::explain::explain(&p, None);
        }
    });
});
