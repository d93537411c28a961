//! Reports: planning goldens, the privacy statement against the ledger, the
//! self-contained HTML rendered by headless Chromium.

use std::path::{Path, PathBuf};

use crate::util::*;

fn annual() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/annual_report.toml")
}

/// The planned ε split and expected errors of the annual report (planning reads
/// no private rows, so this is stable for a given configuration).
#[test]
fn golden_report_plan() {
    let (_d, data) = dataset();
    let out = ok(&data, &["report", annual().to_str().unwrap(), "--plan"]);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/report_plan.txt");
    if std::env::var_os("DPQ_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &out).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(out, want, "report plan changed; review and regenerate with DPQ_UPDATE_GOLDEN=1");
    // planning spent nothing
    assert_eq!(json(&data, &["budget", "--format", "json"])["spent_epsilon"], "0");
}

#[test]
fn report_is_charged_once_and_its_statement_matches_the_ledger() {
    let (d, data) = dataset();
    let out_dir = d.path().join("report");
    ok(&data, &["report", annual().to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    let log = json(&data, &["budget", "--log", "--format", "json"]);
    let entries: Vec<&serde_json::Value> = log["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "report" || e["kind"] == "query").collect();
    assert_eq!(entries.len(), 1, "one ledger charge for the whole report");
    let e = entries[0];
    assert_eq!(e["kind"], "report");
    let result = log["entries"].as_array().unwrap().iter().find(|x| x["kind"] == "result").unwrap();
    assert_eq!(result["charge_id"], e["id"]);
    assert_eq!(r["privacy"]["result_hash"], result["result_hash"], "the report names the hash of its stored result");
    assert_eq!(r["privacy"]["entry"], e["id"]);
    assert_eq!(r["privacy"]["entry_hash"], e["hash"]);
    assert_eq!(r["privacy"]["epsilon"], e["epsilon"]);
    assert_eq!(r["privacy"]["epsilon"], "3");
    assert_eq!(r["privacy"]["remaining_epsilon"], log["remaining_epsilon"]);
    // the statement carries the same numbers
    let html = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for text in [&html, &md] {
        assert!(text.contains(&format!("ledger entry #{}", e["id"])), "statement lacks the entry id");
        assert!(text.contains(e["hash"].as_str().unwrap()), "statement lacks the entry hash");
        assert!(text.contains("ε = 3"), "statement lacks ε");
        assert!(text.contains("Bias from bounding is stated per section"));
    }
    // every number carries value, stddev and interval
    for s in r["sections"].as_array().unwrap() {
        for row in s["result"]["rows"].as_array().unwrap() {
            for (_, v) in row.as_object().unwrap() {
                if v.is_object() {
                    for k in ["value", "stddev", "ci_low", "ci_high", "confidence"] {
                        assert!(v.get(k).is_some(), "section {} lacks {k}", s["id"]);
                    }
                }
            }
        }
    }
    // self-contained: no scripts, no external resources
    assert!(!html.contains("<script"), "no scripts");
    let external = html.matches("http").count() - html.matches("http://www.w3.org/2000/svg").count();
    assert_eq!(external, 0, "no network references");
    assert!(html.matches("<svg").count() >= 7, "charts are inline SVG");
    // running the same report again replays it at no cost
    let again = ok(&data, &["report", annual().to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(again.contains("replayed"), "{again}");
    assert_eq!(json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"], "3");
}

#[test]
fn reports_that_do_not_fit_are_refused_before_anything_runs() {
    let (d, data) = dataset();
    let spec = d.path().join("big.toml");
    std::fs::write(
        &spec,
        r#"
title = "too big"
[privacy]
epsilon = 20.0
[[section]]
id = "n"
title = "n"
chart = "headline"
epsilon_share = 1
sql = "SELECT COUNT(*) AS n FROM messages"
"#,
    )
    .unwrap();
    let r = run(&data, &["report", spec.to_str().unwrap(), "--out", d.path().join("o").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("budget exhausted") && r.stderr.contains("report"), "{}", r.stderr);
    assert!(!d.path().join("o").exists(), "nothing was written");
    // an unreachable accuracy target is refused at planning
    std::fs::write(
        &spec,
        r#"
title = "strict"
[privacy]
epsilon = 0.5
[[section]]
id = "n"
title = "n"
chart = "headline"
target = { ci_halfwidth = 0.001 }
sql = "SELECT COUNT(*) AS n FROM messages"
"#,
    )
    .unwrap();
    let r = run(&data, &["report", spec.to_str().unwrap(), "--plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("accuracy targets"), "{}", r.stderr);
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Render index.html in headless Chromium (as a reader would), take a
/// screenshot at phone width, and check the page loaded with its charts.
#[test]
fn report_renders_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        assert!(std::env::var_os("DPQ_SKIP_BROWSER").is_some(), "chromium is not installed; .ci/run installs it (set DPQ_SKIP_BROWSER=1 to skip knowingly)");
        return;
    };
    let (d, data) = dataset();
    let out_dir = d.path().join("report");
    ok(&data, &["report", annual().to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    let url = format!("file://{}", out_dir.join("index.html").display());
    let profile = d.path().join("chrome-profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let shot = out_dir.join("screenshot.png");
    let o = std::process::Command::new(&chrome)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=412,4000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(o.status.success(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot too small: {} bytes", png.len());
    // the DOM after load holds every section and its chart
    let o = std::process::Command::new(&chrome).args(flags).arg(format!("--user-data-dir={}", profile.display())).arg("--dump-dom").arg(&url).output().unwrap();
    assert!(o.status.success());
    let dom = String::from_utf8_lossy(&o.stdout);
    for id in ["messages_per_day", "growth", "top_emoji", "hourly", "last_message", "video_after_dinner", "payments", "call_minutes", "privacy"] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "section {id} missing from the rendered page");
    }
    assert!(dom.matches("<svg").count() >= 7);
    assert!(dom.contains("class=\"errorbar\""), "error bars drawn");
    // heat maps carry a colour legend and a table of their values and intervals
    assert!(dom.contains("class=\"legend\"") && dom.contains("class=\"values\""), "heat map legend and values");
    // months by name, technical detail folded away, no raw timestamps
    assert!(dom.contains(">Jan<") && dom.contains("How this was computed"));
    assert!(!regex_like_raw_timestamp(&dom), "a raw timestamp in the page");
    // no negative count anywhere: every released count is ≥ 0, with its interval
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    for sec in report["sections"].as_array().unwrap() {
        for row in sec["result"]["rows"].as_array().unwrap() {
            for (name, cell) in row.as_object().unwrap() {
                if let Some(v) = cell.get("value").and_then(|v| v.as_f64()) {
                    let counts = name.contains("messages") || name.contains("uses") || name.contains("payments") || name.contains("calls");
                    if counts {
                        assert!(v >= 0.0 && cell["ci_low"].as_f64().unwrap() >= 0.0, "{}: {name} = {v}", sec["id"]);
                    }
                }
            }
        }
    }
    for bad in ["-inf", "inf %", "NaN"] {
        assert!(!dom.contains(bad), "`{bad}` printed in the report");
    }
    if let Ok(keep) = std::env::var("DPQ_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// A run of 13+ digits not after a decimal point or inside a hex hash (a
/// timestamp printed as its raw milli/micro/nanoseconds).
fn regex_like_raw_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !(b[i - 1] == b'.' || b[i - 1].is_ascii_alphanumeric())) {
            let j = (i..b.len()).find(|&k| !b[k].is_ascii_digit()).unwrap_or(b.len());
            let hexish = j < b.len() && b[j].is_ascii_alphabetic();
            if j - i >= 13 && !hexish {
                return true;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    false
}

/// A spec naming a column its section's answer lacks is refused by --plan,
/// before anything is charged, with the closest column.
#[test]
fn misspelt_columns_are_caught_by_the_plan() {
    let (d, data) = dataset();
    let spec = d.path().join("bad.toml");
    std::fs::write(
        &spec,
        r#"
title = "t"
[privacy]
epsilon = 1
[[section]]
id = "kinds"
title = "kinds"
chart = "bar"
x = "chat_knd"
epsilon_share = 1
sql = "SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind"
"#,
    )
    .unwrap();
    let r = run(&data, &["report", spec.to_str().unwrap(), "--plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("x = \"chat_knd\"") && r.stderr.contains("did you mean `chat_kind`?"), "{}", r.stderr);
    assert!(!r.stderr.contains("__dpq"), "{}", r.stderr);
    let b = json(&data, &["budget", "--format", "json"]);
    assert_eq!(b["for_reference"]["charges"], 0);
}

/// With dpq.toml's default mechanism Gaussian and none in the spec, the
/// report's statement says Gaussian (it said Laplace whatever was used).
#[test]
fn the_statement_names_the_mechanism_used() {
    let (d, data) = dataset();
    let toml = std::fs::read_to_string(data.join("dpq.toml")).unwrap();
    std::fs::write(data.join("dpq.toml"), toml.replacen("mechanism = \"laplace\"", "mechanism = \"gaussian\"", 1)).unwrap();
    let spec = d.path().join("g.toml");
    std::fs::write(
        &spec,
        "title = \"g\"\n[privacy]\nepsilon = 1\n[[section]]\nid = \"n\"\ntitle = \"n\"\nchart = \"headline\"\nepsilon_share = 1\nsql = \"SELECT COUNT(*) AS n FROM messages\"\n",
    )
    .unwrap();
    let out = d.path().join("o");
    ok(&data, &["report", spec.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(j["privacy"]["mechanism"].as_str().unwrap_or("").to_lowercase().contains("gauss"), "{}", j["privacy"]);
}

/// Sections that must agree are planned so that they do: on a year of
/// generated messages, the months (`limits_of` the year totals) add up to the
/// 2025 total within the noise both state, and they were bounded with the
/// year totals' limits. A `limits_of` naming a later section is refused.
#[test]
fn months_add_up_to_the_year_total() {
    let (d, data) = messages_dataset(120, 365, 11);
    let spec = d.path().join("year.toml");
    let sections = |order: [&str; 2]| {
        let year = r#"
[[section]]
id = "year"
title = "Messages per year"
chart = "bar"
epsilon_share = 1
sql = "SELECT CASE WHEN ts >= '2025-01-01' THEN '2025' ELSE '2024' END AS year, COUNT(*) AS messages FROM messages WHERE ts >= '2024-01-01' AND ts < '2026-01-01' GROUP BY 1"
"#;
        let months = r#"
[[section]]
id = "months"
title = "Messages by month"
chart = "line"
x = "month"
epsilon_share = 1
limits_of = "year"
sql = "SELECT date_part('month', ts) AS month, COUNT(*) AS messages FROM messages WHERE ts >= '2025-01-01' AND ts < '2026-01-01' GROUP BY month"
"#;
        let body: Vec<&str> = order.iter().map(|o| if *o == "year" { year } else { months }).collect();
        format!("title = \"t\"\n[privacy]\nepsilon = 10\n{}", body.join(""))
    };
    std::fs::write(&spec, sections(["months", "year"])).unwrap();
    let r = run(&data, &["report", spec.to_str().unwrap(), "--plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("limits_of = \"year\" must name an earlier section"), "{}", r.stderr);

    std::fs::write(&spec, sections(["year", "months"])).unwrap();
    let plan = ok(&data, &["report", spec.to_str().unwrap(), "--plan"]);
    assert!(plan.contains("the limits section `year` chooses"), "{plan}");
    let out = d.path().join("out");
    ok(&data, &["report", spec.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let sec = |id: &str| rep["sections"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone();
    let (year, months) = (sec("year"), sec("months"));
    assert_eq!(year["bounding"], months["bounding"], "bounded alike");
    let notes = months["result"]["notes"].to_string();
    assert!(notes.contains("section `year` chose"), "{notes}");
    let total = year["result"]["rows"].as_array().unwrap().iter().find(|r| r["year"] == "2025").unwrap()["messages"].clone();
    let rows = months["result"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let sum: f64 = rows.iter().map(|r| r["messages"]["value"].as_f64().unwrap()).sum();
    let var: f64 = rows.iter().map(|r| r["messages"]["stddev"].as_f64().unwrap().powi(2)).sum::<f64>() + total["stddev"].as_f64().unwrap().powi(2);
    // 5 standard deviations of the difference of two independent noisy totals
    // (Laplace sums: a false failure well below 10⁻⁴)
    let (t, diff) = (total["value"].as_f64().unwrap(), sum - total["value"].as_f64().unwrap());
    assert!(diff.abs() <= 5.0 * var.sqrt(), "months sum to {sum}, the 2025 total is {t} (±{} sd)", var.sqrt());
    assert!(diff.abs() <= 0.2 * t, "months sum to {sum} against {t}: the noise is small next to the total, so they must agree closely");
}
