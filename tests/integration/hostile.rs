//! Hardening: hostile queries, side channels, crashes, concurrency, bad input.

use std::io::Write;

use crate::util::*;

const SECRET: &str = "SECRET-TOKEN-4242";

/// A dataset with one message whose emoji column holds a secret string.
fn with_secret() -> (tempfile::TempDir, std::path::PathBuf) {
    let (d, data) = dataset();
    let f = d.path().join("secret.csv");
    std::fs::write(&f, format!("user_id,ts,chat_kind,emoji,length\n7,2025-01-05T03:00:00Z,private,{SECRET},9223372036854775807\n")).unwrap();
    ok(&data, &["ingest", "messages", f.to_str().unwrap()]);
    (d, data)
}

/// Queries built to extract one person's data are refused, or answered with
/// bounded, noisy, charged results; no output or error contains a private value.
#[test]
fn hostile_queries_never_leak() {
    let (_d, data) = with_secret();
    let attacks = [
        // isolate one person with every aggregate
        "SELECT COUNT(*) FROM messages WHERE user_id = 7",
        "SELECT SUM(length) FROM messages WHERE user_id = 7",
        "SELECT AVG(length) FROM messages WHERE user_id = 7",
        "SELECT MEDIAN(length) FROM messages WHERE user_id = 7",
        "SELECT VARIANCE(length) FROM messages WHERE user_id = 7",
        "SELECT emoji, COUNT(*) FROM messages WHERE user_id = 7 GROUP BY emoji",
        // errors that would fire only on the secret row
        "SELECT COUNT(*) FROM messages WHERE CAST(emoji AS INT) = 1",
        "SELECT COUNT(*) FROM messages WHERE CAST(emoji AS DATE) > DATE '2020-01-01'",
        "SELECT COUNT(*) FROM messages WHERE CAST(emoji AS TIMESTAMP) > TIMESTAMP '2020-01-01T00:00:00'",
        "SELECT COUNT(*) FROM messages WHERE 100 / (user_id - 7) > 1",
        "SELECT COUNT(*) FROM messages WHERE length % (user_id - 7) = 0",
        "SELECT SUM(clamp(length * length * length, 0, 100)) FROM messages",
        "SELECT COUNT(*) FROM messages WHERE to_timestamp(emoji) > now()",
        "SELECT COUNT(*) FROM messages WHERE arrow_cast(emoji, 'Int64') > 1",
        // the audit's examples: errors that only one person's rows would trigger
        "SELECT COUNT(*) FROM messages WHERE substr(chat_kind, 1, CASE WHEN user_id = 7 AND length > 110 THEN -1 ELSE 1 END) <> 'zzz'",
        "SELECT COUNT(*) FROM messages WHERE abs(CASE WHEN user_id = 7 THEN CAST(-128 AS TINYINT) ELSE CAST(0 AS TINYINT) END) >= 0",
        "SELECT COUNT(*) FROM messages WHERE date_bin(CASE WHEN user_id = 7 THEN INTERVAL '0 seconds' ELSE INTERVAL '1 hour' END, ts) IS NOT NULL",
        "SELECT COUNT(*) FROM messages WHERE date_trunc(CASE WHEN user_id = 7 THEN 'bogus' ELSE 'day' END, ts) IS NOT NULL",
        "SELECT COUNT(*) FROM messages WHERE ts + CASE WHEN user_id = 7 THEN INTERVAL '300000 years' ELSE INTERVAL '1 day' END > ts",
        "SELECT COUNT(*) FROM messages WHERE power(length, length) > 0",
        // keys that would reveal the secret without a domain
        "SELECT CAST(emoji AS VARCHAR) AS e, COUNT(*) FROM messages GROUP BY e",
        "SELECT upper(emoji) AS e, COUNT(*) FROM messages GROUP BY e",
        // rows out
        "SELECT emoji FROM messages WHERE user_id = 7",
        "SELECT MAX(emoji) FROM messages",
    ];
    for q in attacks {
        let before = spent(&data);
        let r = run(&data, &["query", q, "--format", "json", "--epsilon", "0.1", "--delta", "1e-7"]);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(!all.contains(SECRET), "`{q}` leaked the secret:\n{all}");
        assert!(!all.contains("9223372036854775807"), "`{q}` leaked a private value:\n{all}");
        if r.code == 0 {
            let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
            assert_eq!(v["privacy"]["replayed"], false);
            assert_ne!(v["privacy"]["epsilon"], "0", "`{q}` must be charged");
            for row in v["rows"].as_array().unwrap() {
                for (_, cell) in row.as_object().unwrap() {
                    if let Some(sd) = cell.get("stddev") {
                        assert!(sd.as_f64().unwrap_or(1.0) > 0.0, "`{q}` released a value without noise");
                    }
                }
            }
        } else {
            // a failure is a refusal before any private row is read: nothing charged
            assert!(r.stderr.contains("refused") || r.stderr.contains("invalid query"), "`{q}` failed after the charge: {}", r.stderr);
            assert_eq!(spent(&data), before, "`{q}` failed but was charged: {}", r.stderr);
        }
    }
    // a differencing attack pays for both halves
    let before = json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"].as_str().unwrap().to_string();
    ok(&data, &["query", "SELECT COUNT(*) FROM calls", "--epsilon", "0.2"]);
    ok(&data, &["query", "SELECT COUNT(*) FROM calls WHERE user_id <> 7", "--epsilon", "0.2"]);
    let after: dpq::privacy::amount::Amount = json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"].as_str().unwrap().parse().unwrap();
    let before: dpq::privacy::amount::Amount = before.parse().unwrap();
    assert_eq!(after - before, "0.4".parse().unwrap());
}

/// ε spent so far (exact, basic composition).
fn spent(data: &std::path::Path) -> String {
    json(data, &["budget", "--format", "json"])["basic_epsilon_exact"].as_str().unwrap().to_string()
}

/// The same query with a condition that holds for one real person (user 7)
/// and with one that holds for nobody ends the same way: both answered, or
/// both refused before any row is read. (Failing only for one person's rows
/// would reveal one bit about that person, whatever the error says.)
#[test]
fn pairs_end_the_same_way() {
    let (_d, data) = with_secret();
    let templates = [
        // the audit's examples
        "SELECT COUNT(*) FROM messages WHERE substr(chat_kind, 1, CASE WHEN {c} THEN -1 ELSE 1 END) <> 'zzz'",
        "SELECT COUNT(*) FROM messages WHERE abs(CASE WHEN {c} THEN CAST(-128 AS TINYINT) ELSE CAST(0 AS TINYINT) END) >= 0",
        "SELECT COUNT(*) FROM messages WHERE date_trunc(CASE WHEN {c} THEN 'bogus' ELSE 'day' END, ts) IS NOT NULL",
        "SELECT COUNT(*) FROM messages WHERE date_bin(CASE WHEN {c} THEN INTERVAL '0 seconds' ELSE INTERVAL '1 hour' END, ts) IS NOT NULL",
        // the same class elsewhere
        "SELECT COUNT(*) FROM messages WHERE CAST(CASE WHEN {c} THEN emoji ELSE '1' END AS INT) > 0",
        "SELECT COUNT(*) FROM messages WHERE 100 / CASE WHEN {c} THEN 0 ELSE 1 END > 1",
        "SELECT COUNT(*) FROM messages WHERE CAST(CASE WHEN {c} THEN -9223372036854775807 - 1 ELSE 1 END AS BIGINT) / -1 > 0",
        "SELECT COUNT(*) FROM messages WHERE ts + CASE WHEN {c} THEN INTERVAL '300000 years' ELSE INTERVAL '1 day' END > ts",
        "SELECT COUNT(*) FROM messages WHERE CAST(ts + CASE WHEN {c} THEN INTERVAL '290000 years' ELSE INTERVAL '1 day' END AS VARCHAR) <> ''",
        "SELECT COUNT(*) FROM messages WHERE to_timestamp(CASE WHEN {c} THEN 'garbage' ELSE '2025-01-01' END) IS NOT NULL",
        "SELECT COUNT(*) FROM messages WHERE factorial(CASE WHEN {c} THEN 100 ELSE 3 END) > 0",
        "SELECT COUNT(*) FROM messages WHERE make_date(CASE WHEN {c} THEN 2025 ELSE 2024 END, CASE WHEN {c} THEN 13 ELSE 1 END, 1) IS NOT NULL",
        "SELECT COUNT(*) FROM messages WHERE chr(CASE WHEN {c} THEN 55296 ELSE 65 END) <> ''",
        "SELECT COUNT(*) FROM messages WHERE -CASE WHEN {c} THEN CAST(-128 AS TINYINT) ELSE CAST(1 AS TINYINT) END <> 0",
        // in a GROUP BY key, an aggregate argument, a join condition, a per-person sub-query
        "SELECT CASE WHEN substr(emoji, 1, CASE WHEN {c} THEN -1 ELSE 1 END) IS NULL THEN 'a' ELSE 'b' END AS k, COUNT(*) FROM messages GROUP BY k",
        "SELECT SUM(clamp(abs(CASE WHEN {c} THEN CAST(-128 AS TINYINT) ELSE CAST(1 AS TINYINT) END), 0, 10)) FROM messages",
        "SELECT COUNT(*) FROM messages m JOIN users u ON m.user_id = u.user_id AND abs(CASE WHEN {c} THEN CAST(-128 AS TINYINT) ELSE CAST(1 AS TINYINT) END) > 0",
        "SELECT AVG(x) FROM (SELECT user_id, clamp(MAX(substr(emoji, 1, CASE WHEN {c} THEN -1 ELSE 1 END)) IS NULL, 0, 1) AS x FROM messages GROUP BY user_id) t",
        "SELECT AVG(c) FROM (SELECT user_id, clamp(SUM(CASE WHEN {c} THEN 9223372036854775807 ELSE 1 END), 0, 10) AS c FROM messages GROUP BY user_id) t",
        "SELECT AVG(c) FROM (SELECT user_id, clamp(AVG(CASE WHEN {c} THEN 9223372036854775807 ELSE 1 END), 0, 10) AS c FROM messages GROUP BY user_id) t",
        // the second attack: a per-person aggregate whose accumulator fails (decimal AVG overflow)
        "SELECT COUNT(*) FROM (SELECT user_id, AVG(CASE WHEN {c} THEN CAST(10000000000000000000000000000000000000 AS DECIMAL(38,0)) ELSE CAST(0 AS DECIMAL(38,0)) END) AS a FROM messages GROUP BY user_id) t WHERE a IS NOT NULL",
        "SELECT COUNT(*) FROM (SELECT user_id, SUM(CASE WHEN {c} THEN CAST(99999999999999999999999999999999999999 AS DECIMAL(38,0)) ELSE CAST(0 AS DECIMAL(38,0)) END) AS a FROM messages GROUP BY user_id) t WHERE a IS NOT NULL",
        // unary minus of a decimal beyond its precision
        "SELECT COUNT(*) FROM messages WHERE -(CAST(CASE WHEN {c} THEN 2 ELSE 1 END AS DECIMAL(38,0)) * CAST(-85070591730234615865843651857942052864 AS DECIMAL(38,0))) > 0",
        // later arguments and ORDER BY of a per-person aggregate
        "SELECT COUNT(*) FROM (SELECT user_id, first_value(length ORDER BY 'x' ~ CASE WHEN {c} THEN '(' ELSE 'a' END) AS f FROM messages GROUP BY user_id) t WHERE f IS NOT NULL",
        "SELECT COUNT(*) FROM (SELECT user_id, first_value(length ORDER BY substr(emoji, 1, CASE WHEN {c} THEN -1 ELSE 1 END)) AS f FROM messages GROUP BY user_id) t WHERE f IS NOT NULL",
        "SELECT COUNT(*) FROM (SELECT user_id, count(length, 'x' ~ CASE WHEN {c} THEN '(' ELSE 'a' END) AS f FROM messages GROUP BY user_id) t WHERE f > 0",
        // a failing public sub-query read only when private rows match
        "SELECT COUNT(*) FROM (SELECT user_id, length FROM messages WHERE {c}) m JOIN (SELECT CAST(a.name AS BIGINT) AS n FROM emoji_catalog a CROSS JOIN emoji_catalog b) e ON m.length = e.n",
        // memory amplified by one person's value
        "SELECT COUNT(*) FROM (SELECT user_id, MAX(replace(replace(replace(replace(replace(replace(CASE WHEN {c} THEN 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' ELSE '' END, 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx'), 'x', 'xxxxxxxxxx')) AS m FROM messages GROUP BY user_id) t WHERE m IS NOT NULL",
        "SELECT COUNT(*) FROM messages WHERE character_length(regexp_replace(regexp_replace(CASE WHEN {c} THEN 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy' ELSE '' END, '(.*)', '$1$1$1$1$1$1$1$1$1$1'), '(.*)', '$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1$1')) > 0",
        // refused before any row is read, whatever the condition
        "SELECT COUNT(*) FROM messages WHERE CASE WHEN {c} THEN emoji SIMILAR TO '\\' ELSE TRUE END",
        "SELECT COUNT(*) FROM messages WHERE repeat(emoji, CASE WHEN {c} THEN 1000000000 ELSE 1 END) <> ''",
    ];
    for t in templates {
        let mut outcomes = Vec::new();
        for c in ["user_id = 7", "user_id = -424242"] {
            let q = t.replace("{c}", c);
            let before = spent(&data);
            let r = run(&data, &["query", &q, "--format", "json", "--epsilon", "0.01", "--delta", "1e-7", "--fresh"]);
            if r.code != 0 {
                assert_eq!(spent(&data), before, "`{q}` failed after the charge: {}", r.stderr);
                assert!(!r.stderr.contains("while reading private rows"), "`{q}`: {}", r.stderr);
            }
            outcomes.push((r.code, r.stderr.lines().next().unwrap_or("").to_string()));
        }
        assert_eq!(outcomes[0], outcomes[1], "the two variants of `{t}` end differently");
    }
}

#[test]
fn overflow_sized_values_are_clamped() {
    let (_d, data) = with_secret();
    let v = json(&data, &["query", "SELECT SUM(length) AS s FROM messages WHERE user_id = 7", "--format", "json", "--epsilon", "1"]);
    let s = v["rows"][0]["s"]["value"].as_f64().unwrap();
    // user 7 contributes at most 20 rows × 2000 to the bounded sum; noise scale 40000
    assert!(s.abs() < 20.0 * 2000.0 + 40000.0 * 25.0, "{s}");
}

#[test]
fn bad_parameters_are_usage_errors() {
    let (_d, data) = dataset();
    for args in [
        vec!["--epsilon", "nan"],
        vec!["--epsilon", "inf"],
        vec!["--epsilon", "-0.5"],
        vec!["--epsilon", "1e40"],
        vec!["--epsilon", "0"],
        vec!["--delta", "2"],
        vec!["--delta", "-1e-9"],
        vec!["--confidence", "1"],
        vec!["--confidence", "nan"],
        vec!["--max-rows-per-group", "-3"],
    ] {
        let mut a = vec!["query", "SELECT COUNT(*) FROM messages"];
        a.extend(args.iter());
        let r = run(&data, &a);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
    // a huge ε is a valid number but exceeds the budget
    let r = run(&data, &["query", "SELECT COUNT(*) FROM messages", "--epsilon", "1000000"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("budget exhausted"), "{}", r.stderr);
}

#[test]
fn bad_input_files_are_explained_and_lose_nothing() {
    let (d, data) = dataset();
    // latin-1 bytes in a field: that row is quarantined, others kept
    let f = d.path().join("latin1.csv");
    let mut w = std::fs::File::create(&f).unwrap();
    w.write_all(b"user_id,ts,kind,duration_s\n1,2025-01-01T10:00:00Z,voice,30\n2,2025-01-01T10:00:00Z,vo\xefce,30\n").unwrap();
    drop(w);
    let out = ok(&data, &["ingest", "calls", f.to_str().unwrap()]);
    assert!(out.contains("kept 1 rows, rejected 1") && out.contains("invalid UTF-8"), "{out}");
    // a huge JSON line (> 16 MiB) is quarantined, the rest kept
    let j = d.path().join("huge.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&j).unwrap());
    writeln!(w, r#"{{"user_id": 1, "ts": "2025-01-01T10:00:00Z", "kind": "video", "duration_s": 5}}"#).unwrap();
    write!(w, r#"{{"user_id": 2, "ts": "2025-01-01T10:00:00Z", "kind": ""#).unwrap();
    w.write_all(&vec![b'x'; 17 << 20]).unwrap();
    writeln!(w, r#"", "duration_s": 5}}"#).unwrap();
    writeln!(w, r#"{{"user_id": 3, "ts": "2025-01-01T11:00:00Z", "kind": "voice", "duration_s": 7}}"#).unwrap();
    drop(w);
    let out = ok(&data, &["ingest", "calls", j.to_str().unwrap()]);
    assert!(out.contains("kept 2 rows, rejected 1") && out.contains("line too long"), "{out}");
    // missing dpq.toml
    let r = run(d.path(), &["query", "SELECT 1"]);
    assert!(r.stderr.contains("no dataset") && r.stderr.contains("dpq init"), "{}", r.stderr);
    // a Parquet part deleted by hand: clear message, no answer from partial data
    let part =
        std::fs::read_dir(data.join("tables/payments")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "parquet")).unwrap();
    std::fs::remove_file(&part).unwrap();
    let r = run(&data, &["query", "SELECT COUNT(*) FROM payments"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("missing on disk") && r.stderr.contains("payments"), "{}", r.stderr);
    // a corrupted ledger.db: clear message
    std::fs::write(data.join("ledger.db"), b"this is not a database at all, just junk bytes").unwrap();
    let _ = std::fs::remove_file(data.join("ledger.db-wal"));
    let _ = std::fs::remove_file(data.join("ledger.db-shm"));
    let r = run(&data, &["budget"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("ledger") && r.stderr.contains("backup"), "{}", r.stderr);
}

/// SIGKILL an ingest at random points: afterwards no partial part is visible,
/// every listed part is intact, and the next ingest works.
/// Start `dpq --data DATA ARGS…` and SIGKILL it after `delay_ms`.
fn kill_after(data: &std::path::Path, args: &[&str], delay_ms: u64) {
    let mut child = dpq().arg("--data").arg(data).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigkill_during_ingest_leaves_no_partial_part() {
    let (d, data) = dataset();
    let logs = d.path().join("big");
    ok(d.path(), &["generate", "--users", "600", "--days", "90", "--out", logs.to_str().unwrap(), "--seed", "5"]);
    let file = logs.join("messages.csv");
    let t0 = std::time::Instant::now();
    ok(&data, &["ingest", "messages", file.to_str().unwrap(), "--force"]);
    let typical = t0.elapsed().as_millis() as u64;
    let mut lcg: u64 = 99;
    for _ in 0..12 {
        lcg = lcg.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = (lcg >> 33) % typical.max(1);
        kill_after(&data, &["ingest", "messages", file.to_str().unwrap(), "--force"], delay);
        // every listed part exists and matches its hash; nothing else is visible
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("tables/messages/manifest.json")).unwrap()).unwrap();
        for p in m["parts"].as_array().unwrap() {
            let path = data.join("tables/messages").join(p["file"].as_str().unwrap());
            let bytes = std::fs::read(&path).unwrap();
            use sha2::Digest;
            assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), p["sha256"].as_str().unwrap());
        }
    }
    // queries work on the committed parts, and a new ingest succeeds (cleaning leftovers)
    ok(&data, &["query", "SELECT COUNT(*) FROM messages", "--epsilon", "0.01"]);
    ok(&data, &["ingest", "messages", file.to_str().unwrap(), "--force"]);
    let leftovers: Vec<_> = std::fs::read_dir(data.join("tables/messages"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Many processes ingesting and querying one dataset at once: all succeed, the
/// tables hold exactly what was ingested, the ledger verifies and matches.
#[test]
fn concurrent_ingest_and_query() {
    let (d, data) = dataset();
    let mut files = Vec::new();
    for i in 0..3 {
        let f = d.path().join(format!("c{i}.csv"));
        let mut s = String::from("user_id,ts,kind,duration_s\n");
        for j in 0..500 {
            s.push_str(&format!("{},2025-02-0{}T10:00:{:02}Z,voice,{}\n", j % 50 + 1, i + 1, j % 60, j));
        }
        std::fs::write(&f, s).unwrap();
        files.push(f);
    }
    let rows_before = |data: &std::path::Path| -> u64 {
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("tables/calls/manifest.json")).unwrap()).unwrap();
        m["parts"].as_array().unwrap().iter().map(|p| p["rows"].as_u64().unwrap()).sum()
    };
    let before = rows_before(&data);
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let data = data.clone();
            std::thread::spawn(move || {
                dpq()
                    .arg("--data")
                    .arg(&data)
                    .args(["query", &format!("SELECT COUNT(*) FROM calls WHERE duration_s > {i}"), "--epsilon", "0.1"])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let ing: Vec<_> = files
        .iter()
        .map(|f| {
            let data = data.clone();
            let f = f.clone();
            std::thread::spawn(move || dpq().arg("--data").arg(&data).args(["ingest", "calls", f.to_str().unwrap()]).output().unwrap())
        })
        .collect();
    for h in handles {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for h in ing {
        let o = h.join().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(rows_before(&data), before + 1500, "each file ingested exactly once");
    assert_eq!(json(&data, &["budget", "--verify", "--format", "json"])["ok"], true);
}

/// SIGKILL during a report: the ledger verifies; a charged report ends as a
/// recorded failure (never redrawn), an uncharged one is produced afterwards.
#[test]
fn sigkill_during_report_is_recoverable() {
    let (d, data) = dataset();
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/annual_report.toml");
    let out = d.path().join("r");
    for delay in [50u64, 400, 900, 1500] {
        kill_after(&data, &["report", spec.to_str().unwrap(), "--out", out.to_str().unwrap()], delay);
        assert_eq!(json(&data, &["budget", "--verify", "--format", "json"])["ok"], true);
    }
    let spent_before = json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"].clone();
    let r = run(&data, &["report", spec.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let spent_after = json(&data, &["budget", "--format", "json"])["basic_epsilon_exact"].clone();
    if spent_before != "0" {
        // an earlier run was charged: the next one replays its stored report, or
        // ends the interrupted charge as a recorded failure — never a new draw, no new charge
        assert_eq!(spent_before, spent_after);
        if r.code != 0 {
            assert!(r.stderr.contains("ended before storing it"), "{}", r.stderr);
            ok(&data, &["report", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--fresh"]);
        }
    } else {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert!(out.join("index.html").exists());
}

/// A 132-byte malformed query that makes the SQL parser backtrack
/// exponentially (found by the `sql` fuzz target; > 60 s before the deadline):
/// dpq gives up after its parse deadline with a clear error instead of hanging.
#[test]
fn pathological_sql_hits_the_parse_deadline() {
    let (_d, data) = dataset();
    let sql = "SELECT dat .a.LECTu .a .a.LECTu .CTA .a .a.LECTu .a [dtS .a.LECTu .at .a.LECTu .a .a.LECTu .CTA .a .a.LECTu .a [dtS .a.LECTu .a .a.L";
    for cmd in ["explain", "query"] {
        let t0 = std::time::Instant::now();
        let r = run(&data, &[cmd, sql]);
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(r.code, 1, "{cmd}: {}", r.stderr);
        assert!(r.stderr.contains("SQL parser gave up") && r.stderr.contains("check the syntax"), "{cmd}: {}", r.stderr);
        assert!(secs < 20.0, "{cmd} took {secs:.1} s");
    }
    // nothing was charged
    let v = json(&data, &["budget", "--format", "json"]);
    assert_eq!(v["basic_epsilon_exact"].as_str().unwrap(), "0", "{v}");
}

/// The second totality attack's findings, as pairs: a quantile over a range
/// wider than f64 holds, the characters of a trim taken from private values,
/// and a stored text value too large to be one person's lever on memory.
#[test]
fn the_second_totality_attack_ends_the_same_way() {
    let (_d, data) = with_secret();
    for t in [
        "SELECT MEDIAN(clamp(CASE WHEN {c} THEN 1e308 ELSE 0 END, -1e308, 1e308)) FROM messages",
        "SELECT chat_kind, MEDIAN(clamp(CASE WHEN {c} THEN 1.7e308 ELSE 0 END, -1.7e308, 1.7e308)) FROM messages GROUP BY chat_kind",
        "SELECT COUNT(*) FROM messages WHERE character_length(ltrim(emoji, CASE WHEN {c} THEN reverse(emoji) ELSE 'a' END)) > 3",
        "SELECT COUNT(*) FROM messages WHERE translate(emoji, CASE WHEN {c} THEN emoji ELSE 'a' END, 'b') <> ''",
        "SELECT AVG(clamp(CASE WHEN {c} THEN length ELSE 0 END, -1e-320, 2e-320)) FROM messages",
    ] {
        let mut outcomes = Vec::new();
        for c in ["user_id = 7", "user_id = -424242"] {
            let q = t.replace("{c}", c);
            let before = spent(&data);
            let r = run(&data, &["query", &q, "--format", "json", "--epsilon", "0.01", "--delta", "1e-7", "--fresh"]);
            assert_ne!(r.code, 101, "`{q}` panicked");
            if r.code != 0 {
                assert_eq!(spent(&data), before, "`{q}` failed after the charge: {}", r.stderr);
            }
            outcomes.push((r.code, r.stderr.lines().next().unwrap_or("").to_string()));
        }
        assert_eq!(outcomes[0], outcomes[1], "the two variants of `{t}` end differently");
    }
    // a 64 KiB+ text value is quarantined at ingest, with the reason
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("long.csv");
    std::fs::write(&f, format!("user_id,ts,chat_kind,emoji,length\n8,2025-01-05T03:00:00Z,private,{},1\n", "x".repeat(70_000))).unwrap();
    let out = ok(&data, &["ingest", "messages", f.to_str().unwrap()]);
    assert!(out.contains("rejected 1") && out.contains("64 KiB"), "{out}");
}

/// The third attack's findings: a public join repeats a person's row, so the
/// "one row per person" claim (and its "nothing was cut") must not survive it;
/// declaring one row per person over stored duplicates is refused; output
/// functions sized by a noisy value are refused.
#[test]
fn one_row_per_person_claims_survive_only_when_true() {
    let (_d, data) = dataset();
    let v = json(
        &data,
        &["query", "SELECT COUNT(*) AS n FROM (SELECT u.user_id, u.age_group FROM users u CROSS JOIN emoji_catalog e) t", "--format", "json", "--epsilon", "1"],
    );
    assert_ne!(v["bias"]["kind"], "none", "a cross join with a public table is not one row per person: {}", v["bias"]);
    let plain = json(&data, &["query", "SELECT COUNT(*) AS n FROM users", "--format", "json", "--epsilon", "1"]);
    assert_eq!(plain["bias"]["kind"], "none");
    // output sized by a noisy value
    let r = run(&data, &["query", "SELECT COUNT(*) AS n FROM users HAVING length(repeat('x', CAST(COUNT(*) AS BIGINT))) > 0", "--epsilon", "0.1"]);
    assert!(r.code == 1 && r.stderr.contains("refused") && r.stderr.contains("repeat"), "{}", r.stderr);
    // a one-row-per-person declaration over stored duplicates is refused
    let toml = std::fs::read_to_string(data.join("dpq.toml")).unwrap();
    std::fs::write(data.join("dpq.toml"), toml.replacen("one_row_per_unit = true", "one_row_per_unit = false", 1)).unwrap();
    ok(&data, &["budget", "accept-config", "--reason", "users may repeat for a while"]);
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("users.csv");
    // user 1 exists in the generated users table: a second row for them
    std::fs::write(&f, "user_id,age_group,signup_date\n1,80s,2024-01-13\n").unwrap();
    ok(&data, &["ingest", "users", f.to_str().unwrap(), "--force"]);
    std::fs::write(data.join("dpq.toml"), &toml).unwrap();
    let r = run(&data, &["budget", "accept-config", "--reason", "back to one row"]);
    assert!(r.code == 1 && r.stderr.contains("more than one row for 1 people"), "{}", r.stderr);
}
