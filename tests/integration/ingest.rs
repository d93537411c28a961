use std::io::Write;

use crate::util::*;

fn count_rows_csv(p: &std::path::Path) -> u64 {
    let mut r = csv::Reader::from_path(p).unwrap();
    r.records().count() as u64
}

#[test]
fn init_generate_ingest_every_table_keeps_every_row() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("ds");
    ok(root.path(), &["init", data.to_str().unwrap()]);
    let logs = root.path().join("logs");
    for fmt in ["csv", "jsonl", "parquet"] {
        let out = logs.join(fmt);
        ok(root.path(), &["generate", "--users", "60", "--days", "20", "--out", out.to_str().unwrap(), "--format", fmt, "--seed", "9"]);
    }
    for t in ["emoji_catalog", "users", "messages", "calls", "payments"] {
        let csv_file = logs.join("csv").join(format!("{t}.csv"));
        let expected = count_rows_csv(&csv_file);
        let out = ok(&data, &["ingest", t, csv_file.to_str().unwrap()]);
        assert!(out.contains(&format!("kept {expected} rows, rejected 0")), "{out}");
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("tables").join(t).join("manifest.json")).unwrap()).unwrap();
        let rows: u64 = m["parts"].as_array().unwrap().iter().map(|p| p["rows"].as_u64().unwrap()).sum();
        assert_eq!(rows, expected, "{t}");
    }
    // the same data in JSON Lines and Parquet ingests into fresh tables identically
    let data2 = root.path().join("ds2");
    ok(root.path(), &["init", data2.to_str().unwrap()]);
    for fmt in ["jsonl", "parquet"] {
        let f = logs.join(fmt).join(format!("messages.{fmt}"));
        let out = ok(&data2, &["ingest", "messages", f.to_str().unwrap(), "--force"]);
        assert!(out.contains("rejected 0"), "{fmt}: {out}");
    }
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data2.join("tables/messages/manifest.json")).unwrap()).unwrap();
    let expected = count_rows_csv(&logs.join("csv/messages.csv"));
    assert_eq!(m["parts"][0]["rows"].as_u64().unwrap(), expected);
    assert_eq!(m["parts"][1]["rows"].as_u64().unwrap(), expected);
    // init refuses to overwrite
    let r = run(root.path(), &["init", data.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already holds a dataset"), "{}", r.stderr);
}

#[test]
fn bad_rows_are_quarantined_with_reasons_and_good_rows_kept() {
    let (_d, data) = dataset();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("more.csv");
    let mut w = std::fs::File::create(&f).unwrap();
    writeln!(w, "user_id,ts,chat_kind,emoji,length").unwrap();
    writeln!(w, "1,2025-03-01T10:00:00Z,private,😂,12").unwrap();
    writeln!(w, "2,not-a-time,private,,7").unwrap(); // bad timestamp
    writeln!(w, "3,2025-03-01T11:00:00Z,group,,9").unwrap();
    writeln!(w, ",2025-03-01T12:00:00Z,group,,9").unwrap(); // missing privacy unit
    writeln!(w, "4,2025-03-01T13:00:00Z,group,👍,15").unwrap();
    drop(w);
    let out = ok(&data, &["ingest", "messages", f.to_str().unwrap()]);
    assert!(out.contains("kept 3 rows, rejected 2"), "{out}");
    assert!(out.contains("1 × missing privacy unit"), "{out}");
    assert!(out.contains("1 × wrong type in column `ts`"), "{out}");
    let q = std::fs::read_dir(data.join("quarantine/messages")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("more")).unwrap();
    // named after the source without its extension (not more.csv.jsonl)
    assert!(q.file_name().unwrap().to_string_lossy().ends_with("-more.jsonl"), "{}", q.display());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(q).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["line"], 3);
    assert!(lines[0]["reason"].as_str().unwrap().contains("timestamp"));
    assert_eq!(lines[1]["line"], 5);
    assert_eq!(lines[1]["reason"], "missing privacy unit");
    // the same file again is refused; --force ingests it again
    let r = run(&data, &["ingest", "messages", f.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already ingested") && r.stderr.contains("--force"), "{}", r.stderr);
    ok(&data, &["ingest", "messages", f.to_str().unwrap(), "--force"]);
}

#[test]
fn undeclared_table_and_schema_mismatch_are_explained() {
    let (_d, data) = dataset();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.csv");
    std::fs::write(&f, "a,b\n1,2\n").unwrap();
    let r = run(&data, &["ingest", "stickers", f.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not declared") && r.stderr.contains("[tables.stickers]"), "{}", r.stderr);
    let r = run(&data, &["ingest", "messages", f.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unexpected column `a`"), "{}", r.stderr);
    // empty file, duplicate header
    let e = dir.path().join("empty.csv");
    std::fs::write(&e, "").unwrap();
    let r = run(&data, &["ingest", "messages", e.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("empty"), "{}", r.stderr);
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "user_id,ts,ts\n1,2,3\n").unwrap();
    let r = run(&data, &["ingest", "messages", dup.to_str().unwrap()]);
    assert!(r.stderr.contains("twice"), "{}", r.stderr);
}

#[test]
fn config_errors_name_file_key_and_fix() {
    let cases: &[(&str, &str)] = &[
        ("[budget]\nepsilon = 1\ncolour = 'red'\n", "colour"),
        ("[budget]\nepsilon = 1\n[tables.t]\n", "privacy_unit"),
        ("[budget]\nepsilon = 1\n[tables.t]\nprivacy_unit = 'u'\n[tables.t.columns.x]\nbounds = [10, 1]\n", "lo > hi"),
        ("[budget]\nepsilon = 1\n[tables.t]\nprivacy_unit = 'u'\n[tables.t.columns.x]\nbounds = [0, nan]\n", "finite"),
        ("[budget]\nepsilon = 0\n", "budget.epsilon"),
        ("[budget]\nepsilon = 1\ndelta = 1.5\n", "budget.delta"),
        ("[budget]\nepsilon = 1\n[tables.t]\nprivacy_unit = 'u'\n[tables.t.columns.x]\ndomain = { table = 'ghost', column = 'g' }\n", "ghost"),
    ];
    for (text, needle) in cases {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("dpq.toml"), text).unwrap();
        let r = run(d.path(), &["budget"]);
        assert_eq!(r.code, 1, "{text}");
        assert!(r.stderr.contains("dpq.toml") && r.stderr.contains(needle), "{text}\n→ {}", r.stderr);
        assert!(r.stderr.contains("fix") || r.stderr.contains("hint") || r.stderr.contains("unknown field"), "{}", r.stderr);
    }
    let d = tempfile::tempdir().unwrap();
    let r = run(d.path(), &["budget"]);
    assert!(r.stderr.contains("dpq init"), "{}", r.stderr);
}

/// A file whose columns don't match the table is refused before anything is
/// written (messages.jsonl into users); a one-row-per-person table
/// quarantines a second row for a person, within a file and against the rows
/// already stored, and the stored count stays one per person.
#[test]
fn mismatched_files_are_refused_and_duplicate_people_quarantined() {
    let (_d, data) = dataset();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = |t: &str| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(data.join("tables").join(t))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
            .collect();
        v.sort();
        v
    };
    let before = snapshot("users");
    let m = dir.path().join("messages.jsonl");
    std::fs::write(&m, "{\"user_id\":1,\"ts\":\"2025-03-01T10:00:00Z\",\"chat_kind\":\"private\",\"emoji\":null,\"length\":3}\n").unwrap();
    let r = run(&data, &["ingest", "users", m.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("field") && r.stderr.contains("`ts`") && r.stderr.contains("Nothing was written"), "the mismatch is named: {}", r.stderr);
    assert_eq!(snapshot("users"), before, "nothing written");
    assert!(!data.join("quarantine/users").exists() || std::fs::read_dir(data.join("quarantine/users")).unwrap().count() == 0);

    // person 1 is stored already; person 900 twice in the new file
    let u = dir.path().join("more-users.csv");
    std::fs::write(&u, "user_id,age_group,signup_date\n900,90s,2024-02-01\n1,80s,2024-01-13\n900,70s,2024-03-01\n901,55+,2024-04-01\n").unwrap();
    let out = ok(&data, &["ingest", "users", u.to_str().unwrap()]);
    assert!(out.contains("kept 2 rows, rejected 2"), "{out}");
    assert!(out.contains("2 × a second row for this person"), "{out}");
    let q = std::fs::read_dir(data.join("quarantine/users")).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("more-users")).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(q).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let quarantined: Vec<i64> = lines.iter().map(|l| l["line"].as_i64().unwrap()).collect();
    assert_eq!(quarantined, vec![3, 4], "the stored person's row and the file's second row for 900: {lines:?}");
    assert!(lines.iter().all(|l| l["reason"].as_str().unwrap().contains("one_row_per_unit")), "{lines:?}");
    // the table answers as one row per person: 150 + 2 people, each once
    let v = json(&data, &["query", "SELECT COUNT(*) AS n FROM users", "--epsilon", "5", "--format", "json"]);
    let n = v["rows"][0]["n"]["value"].as_f64().unwrap();
    assert!((n - 152.0).abs() <= 6.0, "{v}");
}
