//! The SQL planner/rewriter on arbitrary SQL over the demo schema: never panics,
//! and never executes an unrewritten plan over private tables. It goes through
//! the library's only door, `Session::explain`, which parses, analyses,
//! calibrates and builds the bounded plan, and spends nothing.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

struct Fixture {
    rt: tokio::runtime::Runtime,
    session: dpq::Session,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dpq-fuzz-{}", std::process::id()));
        let data = dir.join("data");
        let ds = dpq::dataset::Dataset::init(&data).unwrap();
        let id = ds.id("fuzz").unwrap();
        let logs = dir.join("logs");
        let o = dpq::generate::GenerateOptions { users: 20, days: 3, out: logs.clone(), format: dpq::storage::FileFormat::Parquet, ..Default::default() };
        dpq::generate::generate(&o).unwrap();
        for t in ["emoji_catalog", "users", "messages", "calls", "payments"] {
            let o = dpq::ingest::IngestOptions {
                dataset: Some(id.clone()),
                table: t.into(),
                files: vec![logs.join(format!("{t}.parquet"))],
                force: false,
                format: None,
                progress: dpq::progress::silent(),
            };
            dpq::ingest::ingest(&ds.dir, &ds.config, &o).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let session = rt.block_on(dpq::Session::open(&data)).unwrap();
        Fixture { rt, session }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    if sql.len() > 4096 {
        return;
    }
    let f = fixture();
    let options = dpq::QueryOptions::new().delta("1e-8".parse().unwrap());
    f.rt.block_on(async {
        let _ = f.session.explain(sql, &options).await;
    });
});
