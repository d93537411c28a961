//! `dpq query`, `explain`, `budget` through the real binary.

use crate::util::*;

#[test]
fn query_json_follows_the_contract() {
    let (_d, data) = dataset();
    let v = json(&data, &["query", "SELECT chat_kind, COUNT(*) AS n, AVG(length) AS avg_len FROM messages GROUP BY chat_kind", "--format", "json"]);
    assert_eq!(v["columns"], serde_json::json!(["chat_kind", "n", "avg_len"]));
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "both domain values released");
    for r in rows {
        assert!(r["chat_kind"].is_string(), "group key is a plain value");
        for c in ["n", "avg_len"] {
            let cell = &r[c];
            for k in ["value", "stddev", "ci_low", "ci_high", "confidence"] {
                assert!(cell.get(k).is_some(), "{c} lacks {k}: {cell}");
            }
            assert!(cell["ci_low"].as_f64().unwrap() <= cell["value"].as_f64().unwrap());
            assert!(cell["ci_high"].as_f64().unwrap() >= cell["value"].as_f64().unwrap());
            assert_eq!(cell["confidence"], 0.95);
        }
    }
    let p = &v["privacy"];
    for k in ["epsilon", "delta", "remaining_epsilon", "remaining_delta", "entry", "replayed"] {
        assert!(p.get(k).is_some(), "privacy lacks {k}");
    }
    assert_eq!(p["epsilon"], "0.5");
    assert_eq!(p["replayed"], false);
    assert_eq!(p["remaining_epsilon"], "9.5");
    assert!(p["ledger_hash"].is_string() && p["result_hash"].is_string());
}

#[test]
fn replay_is_free_fresh_charges_and_ingest_invalidates() {
    let (d, data) = dataset();
    let sql = "SELECT kind, COUNT(*) AS n FROM calls GROUP BY kind";
    let a = json(&data, &["query", sql, "--format", "json"]);
    // different spelling, same plan: replayed
    let b = json(&data, &["query", "select KIND, count(*) as n from CALLS group by kind", "--format", "json"]);
    assert_eq!(b["privacy"]["replayed"], true);
    assert_eq!(a["rows"], b["rows"]);
    assert_eq!(b["privacy"]["epsilon"], "0");
    let spent = |data: &std::path::Path| json(data, &["budget", "--format", "json"])["basic_epsilon_exact"].as_str().unwrap().to_string();
    assert_eq!(spent(&data), "0.5");
    let c = json(&data, &["query", sql, "--format", "json", "--fresh"]);
    assert_eq!(c["privacy"]["replayed"], false);
    assert_ne!(a["rows"], c["rows"]);
    assert_eq!(spent(&data), "1");
    // new data → new data version → a new answer, charged
    let f = d.path().join("late.csv");
    std::fs::write(&f, "user_id,ts,kind,duration_s\n1,2025-02-01T10:00:00Z,video,60\n").unwrap();
    ok(&data, &["ingest", "calls", f.to_str().unwrap()]);
    let e = json(&data, &["query", sql, "--format", "json"]);
    assert_eq!(e["privacy"]["replayed"], false);
    assert_eq!(spent(&data), "1.5");
}

#[test]
fn exhausted_budget_refuses_and_says_what_remains() {
    let (_d, data) = dataset();
    ok(&data, &["budget", "set", "--epsilon", "1", "--reason", "a small budget for this test"]);
    ok(&data, &["query", "SELECT COUNT(*) FROM messages", "--epsilon", "0.7"]);
    let r = run(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.5"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("budget exhausted") && r.stderr.contains("ε=0.5") && r.stderr.contains("0.3"), "{}", r.stderr);
    assert!(r.stderr.contains("--epsilon") && r.stderr.contains("dpq budget set"), "{}", r.stderr);
    // lowering the total below what is spent is refused, and reading still works
    let r = run(&data, &["budget", "set", "--epsilon", "0.5", "--reason", "cut"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("below what was already spent"), "{}", r.stderr);
    assert!(ok(&data, &["budget"]).contains("remains  ε=0.3"));
}

#[test]
fn explain_spends_nothing_and_describes_the_plan() {
    let (_d, data) = dataset();
    let out = ok(&data, &["explain", "SELECT emoji, COUNT(*) AS n FROM messages GROUP BY emoji ORDER BY n DESC LIMIT 5"]);
    for needle in [
        "bounding: L1",
        "limits chosen from the data",
        "predicted with dpq.toml's fixed limits",
        "discrete Laplace",
        "95% CI",
        "emoji_catalog",
        "dpq_bound",
        "budget: ε remaining 10 → 9.5",
    ] {
        assert!(out.contains(needle), "explain lacks `{needle}`:\n{out}");
    }
    let v = json(&data, &["budget", "--format", "json"]);
    assert_eq!(v["spent_epsilon"], "0");
    let e = json(&data, &["explain", "SELECT COUNT(*) FROM messages", "--format", "json"]);
    assert_eq!(e["epsilon"], "0.5");
    // a query the budget cannot pay for is said to be refused, before it is run
    let big = ok(&data, &["explain", "SELECT COUNT(*) FROM messages", "--epsilon", "20"]);
    assert!(big.contains("REFUSED") && big.contains("only ε=10 remains"), "{big}");
    // and the budget line says so, instead of an "after" it would never reach
    assert!(big.contains("budget: ε remaining 10, less than the ε=20 this query needs: it would be refused"), "{big}");
    assert!(!big.contains("→"), "{big}");
    let bj = json(&data, &["explain", "SELECT COUNT(*) FROM messages", "--epsilon", "20", "--format", "json"]);
    assert!(bj["refused"].is_string() && bj["budget_after"].is_null(), "{bj}");
}

#[test]
fn table_and_csv_outputs() {
    let (_d, data) = dataset();
    let t = ok(&data, &["query", "SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind"]);
    assert!(t.contains(" ± ") && t.contains("privacy: ε=0.5"), "{t}");
    let c = ok(&data, &["query", "SELECT kind, COUNT(*) AS n FROM calls GROUP BY kind", "--format", "csv"]);
    assert!(c.starts_with("kind,n,n_stddev,n_ci_low,n_ci_high,dpq_epsilon,dpq_delta,dpq_ledger_entry,"), "the privacy metadata travels with the rows: {c}");
}

#[test]
fn usage_errors_exit_2() {
    let (_d, data) = dataset();
    assert_eq!(run(&data, &["query"]).code, 2);
    assert_eq!(run(&data, &["query", "SELECT 1", "--epsilon", "-1"]).code, 2);
    assert_eq!(run(&data, &["query", "SELECT 1", "--max-groups-per-unit", "0"]).code, 2);
    assert_eq!(run(&data, &["frobnicate"]).code, 2);
    let r = run(&data, &["query", "SELECT COUNT(*) FROM messages", "--confidence", "1.5"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // a build without the Ballista feature says how to get one
    if !cfg!(feature = "ballista") {
        let r = run(&data, &["cluster", "scheduler"]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("--features ballista"), "{}", r.stderr);
    }
    let r = run(&data, &["cluster", "executor", "--scheduler", "nohost"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Issue 15's acceptance test: on data shaped like the demo's (20 000 people,
/// heavy-tailed activity), with default settings, COUNT(*) is within 5 % of
/// the truth at ε = 0.5, and every answer carries its bias disclosure.
#[test]
fn defaults_count_within_five_percent_on_demo_sized_data() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    ok(std::path::Path::new("."), &["init", data.to_str().unwrap()]);
    let logs = d.path().join("logs");
    ok(
        std::path::Path::new("."),
        &["generate", "--users", "20000", "--days", "365", "--messages-per-day", "0.6", "--format", "parquet", "--out", logs.to_str().unwrap(), "--seed", "11"],
    );
    for t in ["emoji_catalog", "users", "messages"] {
        ok(&data, &["ingest", t, logs.join(format!("{t}.parquet")).to_str().unwrap()]);
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("tables/messages/manifest.json")).unwrap()).unwrap();
    let truth: f64 = manifest["parts"].as_array().unwrap().iter().map(|p| p["rows"].as_f64().unwrap()).sum();
    let v = json(&data, &["query", "SELECT COUNT(*) AS n FROM messages", "--epsilon", "0.5", "--format", "json"]);
    let n = v["rows"][0]["n"]["value"].as_f64().unwrap();
    assert!((n - truth).abs() / truth < 0.05, "COUNT(*) = {n} against {truth}: {:.1}% off", 100.0 * (n - truth) / truth);
    assert_eq!(v["bias"]["kind"], "estimated");
    for q in [
        "SELECT chat_kind, COUNT(*) FROM messages GROUP BY chat_kind",
        "SELECT date_part('hour', ts) AS h, COUNT(*) FROM messages GROUP BY h",
        "SELECT COUNT(DISTINCT user_id) FROM messages",
        "SELECT u.age_group, AVG(m.length) FROM messages m JOIN users u ON m.user_id = u.user_id GROUP BY u.age_group",
        "SELECT age_group, COUNT(*) FROM users GROUP BY age_group",
    ] {
        let v = json(&data, &["query", q, "--epsilon", "0.5", "--format", "json"]);
        let kind = v["bias"]["kind"].as_str().unwrap_or("");
        assert!(kind == "estimated" || kind == "none", "`{q}`: no bias disclosure: {}", v["bias"]);
        for row in v["rows"].as_array().unwrap() {
            for (_, cell) in row.as_object().unwrap() {
                if let Some(lo) = cell.get("ci_low").and_then(|x| x.as_f64()) {
                    assert!(lo.is_finite() && cell["ci_high"].as_f64().unwrap().is_finite(), "`{q}`: an unbounded interval");
                }
            }
        }
    }
    // one row per person: nothing is cut, and it says so
    let v = json(&data, &["query", "SELECT age_group, COUNT(*) FROM users GROUP BY age_group", "--epsilon", "0.5", "--format", "json"]);
    assert_eq!(v["bias"]["kind"], "none");
}

/// SQL from a file, from stdin, several statements per request; an empty
/// request is a usage error (exit 2); a failing statement is named.
#[test]
fn query_reads_files_stdin_and_several_statements() {
    let (d, data) = dataset();
    let file = d.path().join("q.sql");
    std::fs::write(&file, "-- two questions\nSELECT COUNT(*) AS n FROM calls;\n\nSELECT chat_kind, COUNT(*) AS m\n  FROM messages\n GROUP BY chat_kind;\n")
        .unwrap();
    let out = ok(&data, &["query", "-f", file.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let answers = v.as_array().expect("several statements give a JSON array");
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0]["columns"][0], "n");
    assert_eq!(answers[1]["columns"][0], "chat_kind");
    // stdin, with `-`
    let mut child = dpq()
        .arg("--data")
        .arg(&data)
        .args(["query", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"SELECT COUNT(*) AS c FROM users").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("privacy: ε="), "{}", String::from_utf8_lossy(&o.stdout));
    // an empty request
    let r = run(&data, &["query", " ; -- nothing\n"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("the SQL is empty"), "{}", r.stderr);
    let r = run(&data, &["query"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // the second of two statements is refused: named, exit 1, the first answered
    let r = run(&data, &["query", "SELECT COUNT(*) FROM calls; SELECT user_id FROM calls"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("privacy: ε="), "the first answer is printed: {}", r.stdout);
    assert!(r.stderr.contains("statement 2 of 2: SELECT user_id FROM calls") && r.stderr.contains("refused"), "{}", r.stderr);
}

/// Schema discovery from dpq.toml: `dpq tables`, `SHOW TABLES`, `DESCRIBE t`.
#[test]
fn tables_and_describe_come_from_the_configuration() {
    let (_d, data) = dataset();
    let out = ok(&data, &["tables"]);
    assert!(out.contains("messages") && out.contains("private, unit user_id") && out.contains("public (answered exactly)"), "{out}");
    let out = ok(&data, &["tables", "messages"]);
    for s in ["length", "int64", "[0, 2000]", "chat_kind", "private, group", "values of emoji_catalog.emoji", "privacy unit"] {
        assert!(out.contains(s), "{s} missing:\n{out}");
    }
    let out = ok(&data, &["query", "SHOW TABLES; DESCRIBE users"]);
    assert!(out.contains("emoji_catalog") && out.contains("age_group"), "{out}");
    let j = json(&data, &["query", "desc messages", "--format", "json"]);
    assert_eq!(j["headers"][0], "column");
    let r = run(&data, &["tables", "mesages"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean `messages`?"), "{}", r.stderr);
    // nothing was charged
    let b = json(&data, &["budget", "--format", "json"]);
    assert_eq!(b["for_reference"]["charges"], 0, "{b}");
}

/// Errors that teach: the closest table, column, function or keyword, and a
/// caret under a syntax error; never DataFusion's notation.
#[test]
fn errors_suggest_what_was_meant() {
    let (_d, data) = dataset();
    let cases: &[(&str, &[&str])] = &[
        ("SELECT COUNT(*) FROM mesages", &["unknown table `mesages`", "did you mean `messages`?", "SHOW TABLES"]),
        ("SELECT chat_knd, COUNT(*) FROM messages GROUP BY chat_knd", &["unknown column `chat_knd`", "did you mean `chat_kind`?"]),
        ("SELECT CONT(*) FROM messages", &["unknown function `cont`", "did you mean `count`?"]),
        (
            "SELECT COUNT(*) FORM messages",
            &["syntax error", "(line 1, column 22)", "  SELECT COUNT(*) FORM messages\n                       ^", "did you mean FROM instead of `FORM`?"],
        ),
        (
            "SELECT\n  COUNT(*)\nFROM messages WHER length > 3",
            &["(line 3, column 20)", "  FROM messages WHER length > 3\n                     ^", "did you mean WHERE"],
        ),
        ("SELECT COUNT(*) FILTER (WHERE length > 10) FROM messages", &["refused: count(*) FILTER (WHERE messages.length > 10)"]),
    ];
    for (sql, want) in cases {
        let r = run(&data, &["explain", sql]);
        assert_eq!(r.code, 1, "{sql}: {}", r.stderr);
        for w in *want {
            assert!(r.stderr.contains(w), "{sql}: `{w}` missing in:\n{}", r.stderr);
        }
        for bad in ["Utf8(", "Int64(", "ParserError(", "datafusion.public", "Schema error"] {
            assert!(!r.stderr.contains(bad), "{sql}: `{bad}` in:\n{}", r.stderr);
        }
    }
}

/// `dpq shell` driven through a pseudo-terminal as a person would use it:
/// dot commands, a statement over two lines completed with Tab, the up arrow
/// (a free replay), .explain, .format, an error that teaches, .quit and the
/// saved history (tests/shell/drive.py; Python's standard library only).
#[test]
fn the_shell_works_at_a_terminal() {
    let (d, data) = dataset();
    let history = d.path().join("history");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shell/drive.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_dpq"))
        .arg(&data)
        .arg(&history)
        .output()
        .expect("python3 runs (.ci/run has it)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "drive.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all shell steps passed"), "{stdout}");
}

/// The README's tour, verbatim, from a fresh directory (.ci/tour): every
/// command in it works as written.
#[test]
fn the_readme_tour_runs_verbatim() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_dpq"));
    let target = bin.parent().and_then(|d| d.parent()).expect("target/debug/dpq");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/tour");
    let out = std::process::Command::new("bash").arg(script).env("CARGO_TARGET_DIR", target).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the README tour failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("README tour: ok"), "{stdout}");
}

/// A domain table is needed only by the queries whose keys use it: with
/// emoji_catalog not yet ingested, messages per chat kind are answered, and
/// messages per emoji say what to ingest.
#[test]
fn domain_tables_are_needed_only_by_the_queries_that_use_them() {
    let (_d, data) = messages_dataset(60, 10, 1);
    let out = ok(&data, &["query", "SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind"]);
    assert!(out.contains("privacy: ε="), "{out}");
    let r = run(&data, &["query", "SELECT emoji, COUNT(*) AS n FROM messages GROUP BY emoji"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("emoji_catalog") && r.stderr.contains("dpq ingest emoji_catalog"), "{}", r.stderr);
}

/// explain predicts the interval an answer then shows: for COUNT, SUM and AVG
/// (at the released n), the predicted half-width is within 2× of the
/// released one (its unclipped side), in every group (fixed limits, so the prediction is exact
/// calibration, not a guess of the limits).
#[test]
fn explain_predicts_the_released_intervals_within_2x() {
    let (_d, data) = dataset();
    ok(&data, &["budget", "set", "--epsilon", "200", "--reason", "the 2x test asks at ε = 120, where no SUM or COUNT is clipped at 0"]);
    let sql = "SELECT chat_kind, COUNT(*) AS n, SUM(length) AS s, AVG(length) AS a FROM messages GROUP BY chat_kind";
    let args = ["--fixed-bounds", "--epsilon", "120", "--format", "json"];
    let e = json(&data, &[&["explain", sql][..], &args[..]].concat());
    let cell = |name: &str| e["cells"].as_array().unwrap().iter().find(|c| c["aggregate"] == name).unwrap().clone();
    let (n_pred, s_pred) = (cell("n")["ci_halfwidth"].as_f64().unwrap(), cell("s")["ci_halfwidth"].as_f64().unwrap());
    // "±44.35 at n = 1000": the AVG half-width shrinks as 1/n
    let note = cell("a")["note"].as_str().unwrap().to_string();
    let at_1000: f64 =
        note.split("±").nth(2).and_then(|t| t.split(" at n = 1000").next()).and_then(|x| x.trim().parse().ok()).unwrap_or_else(|| panic!("{note}"));
    let q = json(&data, &[&["query", sql][..], &args[..]].concat());
    let within = |pred: f64, got: f64, what: &str| assert!(got > 0.0 && pred / got <= 2.0 && got / pred <= 2.0, "{what}: predicted ±{pred}, released ±{got}");
    for row in q["rows"].as_array().unwrap() {
        // intervals are clipped where the answer can't go (below 0, outside
        // the clamp range; lengths sit near 0): compare the longer, unclipped side
        let reach = |c: &str| {
            let (v, lo, hi) = (row[c]["value"].as_f64().unwrap(), row[c]["ci_low"].as_f64().unwrap(), row[c]["ci_high"].as_f64().unwrap());
            (hi - v).max(v - lo)
        };
        within(n_pred, reach("n"), "COUNT");
        within(s_pred, reach("s"), "SUM");
        let n = row["n"]["value"].as_f64().unwrap();
        within(at_1000 * 1000.0 / n, reach("a"), "AVG");
    }
}

/// The at-n prediction of an explain cell, interpolated to `n` (linearly in
/// 1/n, as the errors scale).
fn at_n(cell: &serde_json::Value, field: &str, n: f64) -> f64 {
    let pts: Vec<(f64, f64)> = cell["at_n"].as_array().unwrap().iter().map(|a| (a["n"].as_f64().unwrap(), a[field].as_f64().unwrap())).collect();
    let i = pts.iter().position(|&(m, _)| m >= n).unwrap_or(pts.len() - 1).max(1);
    let ((n0, y0), (n1, y1)) = (pts[i - 1], pts[i]);
    let t = (1.0 / n - 1.0 / n0) / (1.0 / n1 - 1.0 / n0);
    y0 + t * (y1 - y0)
}

/// explain predicts VARIANCE, STDDEV and MEDIAN in the user's units and the
/// answer then matches: the released interval's width is within 2× of the
/// prediction at the released n — for VARIANCE and STDDEV between the
/// mid-range-mean and the mean-at-an-end figures explain states, for MEDIAN
/// as the share of the group's true values the interval spans (computed here
/// from the raw logs).
#[test]
fn explain_predicts_variance_stddev_and_median_within_2x() {
    let (_d, data) = dataset();
    ok(&data, &["budget", "set", "--epsilon", "100", "--reason", "the 2x test asks at ε = 30"]);
    let sql = "SELECT chat_kind, COUNT(*) AS n, VARIANCE(length) AS v, STDDEV(length) AS sd, MEDIAN(length) AS m FROM messages GROUP BY chat_kind";
    let args = ["--fixed-bounds", "--max-groups-per-unit", "1", "--max-rows-per-group", "3", "--epsilon", "30", "--format", "json"];
    let e = json(&data, &[&["explain", sql][..], &args[..]].concat());
    let cell = |name: &str| e["cells"].as_array().unwrap().iter().find(|c| c["aggregate"] == name).unwrap().clone();
    let (v, sd, m) = (cell("v"), cell("sd"), cell("m"));
    for c in [&v, &sd, &m] {
        assert!(c["note"].as_str().unwrap().contains("at n = 1000"), "{c}");
    }
    // the raw lengths per chat kind, for the median's true percentiles
    let logs = base_dataset().parent().unwrap().join("logs").join("messages.csv");
    let mut raw: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for r in csv::Reader::from_path(&logs).unwrap().deserialize::<std::collections::HashMap<String, String>>() {
        let r = r.unwrap();
        raw.entry(r["chat_kind"].clone()).or_default().push(r["length"].parse().unwrap());
    }
    let q = json(&data, &[&["query", sql][..], &args[..]].concat());
    let within = |lo: f64, hi: f64, got: f64, what: &str| {
        assert!(got >= lo / 2.0 && got <= hi * 2.0, "{what}: predicted {lo}…{hi}, released {got}");
    };
    for row in q["rows"].as_array().unwrap() {
        let width = |c: &str| row[c]["ci_high"].as_f64().unwrap() - row[c]["ci_low"].as_f64().unwrap();
        let n = row["n"]["value"].as_f64().unwrap();
        within(at_n(&v, "variance_reach", n), at_n(&v, "variance_reach_worst", n), width("v"), "VARIANCE");
        within(at_n(&sd, "stddev_reach", n), at_n(&sd, "stddev_reach_worst", n), width("sd"), "STDDEV");
        let span = at_n(&m, "percentile_high", n) - at_n(&m, "percentile_low", n);
        let vals = &raw[row["chat_kind"].as_str().unwrap()];
        let share = |p: &dyn Fn(f64) -> bool| 100.0 * vals.iter().filter(|&&x| p(x)).count() as f64 / vals.len() as f64;
        let (lo, hi) = (row["m"]["ci_low"].as_f64().unwrap(), row["m"]["ci_high"].as_f64().unwrap());
        let got = share(&|x| x <= hi) - share(&|x| x < lo);
        within(span, span, got, "MEDIAN (percentile points spanned)");
    }
}

/// Timestamps and dates print as ISO 8601 in every output format (never as
/// raw integers such as 1735516800000000).
#[test]
fn timestamps_and_dates_are_iso_8601_in_every_format() {
    let (_d, data) = dataset();
    ok(&data, &["budget", "set", "--epsilon", "100", "--delta", "1e-4", "--reason", "several formats"]);
    let is_ts = |s: &str| s.len() == 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && s.ends_with('Z');
    let is_date = |s: &str| s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
    let raw_integer = |s: &str| s.split(|c: char| !c.is_ascii_digit()).any(|t| t.len() >= 13);
    for (sql, check) in [
        ("SELECT date_trunc('week', ts) AS k, COUNT(*) AS n FROM messages GROUP BY k", &is_ts as &dyn Fn(&str) -> bool),
        ("SELECT CAST(ts AS DATE) AS k, COUNT(*) AS n FROM messages GROUP BY k", &is_date),
    ] {
        let args = ["--epsilon", "10", "--delta", "1e-6"];
        let j = json(&data, &[&["query", sql, "--format", "json"][..], &args[..]].concat());
        let rows = j["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{sql}: some keys released: {j}");
        for r in rows {
            let k = r["k"].as_str().unwrap_or_else(|| panic!("{sql}: key is a string: {r}"));
            assert!(check(k), "{sql}: JSON key {k}");
        }
        // the same keys in the table and CSV (a replay: same answer, no charge)
        let t = ok(&data, &[&["query", sql][..], &args[..]].concat());
        let c = ok(&data, &[&["query", sql, "--format", "csv"][..], &args[..]].concat());
        for r in rows {
            let k = r["k"].as_str().unwrap();
            assert!(t.contains(k) && c.contains(k), "{sql}: {k} in table and CSV\n{t}\n{c}");
        }
        // the table's body (above its privacy lines, which carry hashes)
        let body: Vec<&str> = t.lines().take_while(|l| !l.is_empty()).collect();
        assert!(!raw_integer(&body.join("\n")), "{sql}: a raw integer timestamp\n{t}");
        let mut rdr = csv::Reader::from_reader(c.as_bytes());
        for rec in rdr.records() {
            let k = rec.unwrap()[0].to_string();
            assert!(check(&k), "{sql}: CSV key {k}");
        }
    }
}

/// Under auto-bounds (the default) explain predicts with the limits the last
/// answer on the same tables used, and says so: its COUNT and SUM
/// half-widths are within 2× of that answer's (the same limits and ε, so
/// the prediction is the answer's own calibration).
#[test]
fn explain_under_auto_bounds_predicts_with_the_last_answers_limits() {
    let (_d, data) = dataset();
    ok(&data, &["budget", "set", "--epsilon", "200", "--reason", "auto-bounds prediction test"]);
    let sql = "SELECT chat_kind, COUNT(*) AS n, SUM(length) AS s FROM messages GROUP BY chat_kind";
    let args = ["--epsilon", "60", "--format", "json"];
    let before = json(&data, &[&["explain", sql][..], &args[..]].concat());
    assert!(before["limits_source"].as_str().unwrap().contains("no answer on these tables recorded its limits yet"), "{before}");
    let q = json(&data, &[&["query", sql][..], &args[..]].concat());
    assert!(q["notes"].to_string().contains("chosen from the data"), "the limits were chosen: {q}");
    let e = json(&data, &[&["explain", sql][..], &args[..]].concat());
    let source = e["limits_source"].as_str().unwrap();
    assert!(
        source.contains("the last answer on these tables used") && source.contains(q["privacy"]["bounding"].as_str().unwrap()),
        "{source} vs {}",
        q["privacy"]["bounding"]
    );
    let cell = |name: &str| e["cells"].as_array().unwrap().iter().find(|c| c["aggregate"] == name).unwrap()["ci_halfwidth"].as_f64().unwrap();
    for row in q["rows"].as_array().unwrap() {
        for c in ["n", "s"] {
            let (v, lo, hi) = (row[c]["value"].as_f64().unwrap(), row[c]["ci_low"].as_f64().unwrap(), row[c]["ci_high"].as_f64().unwrap());
            let got = (hi - v).max(v - lo);
            let pred = cell(c);
            assert!(got > 0.0 && pred / got <= 2.0 && got / pred <= 2.0, "{c}: predicted ±{pred}, released ±{got}");
        }
    }
}
