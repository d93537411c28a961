//! Rendering results for people (table with ± half-widths, CSV, JSON).

use serde_json::Value;

use super::OutputFormat;
use crate::engine::result::QueryResult;
use crate::ledger::{Entry, Status, VerifyReport, fmt_eps};

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return i.to_string();
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            fmt_f(f)
        }
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}

pub fn fmt_f(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    let a = f.abs();
    if a >= 1e6 || (a > 0.0 && a < 1e-3) {
        format!("{f:.4e}")
    } else if a >= 1000.0 {
        format!("{f:.1}")
    } else if a >= 1.0 {
        format!("{f:.3}")
    } else {
        format!("{f:.4}")
    }
}

pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Object(o) if o.contains_key("ci_low") => {
            let lo = o["ci_low"].as_f64().unwrap_or(f64::NAN);
            let hi = o["ci_high"].as_f64().unwrap_or(f64::NAN);
            format!("{} ± {}", num(&o["value"]), fmt_f((hi - lo) / 2.0))
        }
        other => num(other),
    }
}

pub fn render(r: &QueryResult, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let columns: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
            let v = serde_json::json!({
                "columns": columns,
                "column_types": r.columns,
                "rows": r.rows,
                "privacy": r.privacy,
                "notes": r.notes,
            });
            serde_json::to_string_pretty(&v).unwrap() + "\n"
        }
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let mut header = Vec::new();
            for c in &r.columns {
                header.push(c.name.clone());
                if c.noisy {
                    for s in ["stddev", "ci_low", "ci_high"] {
                        header.push(format!("{}_{s}", c.name));
                    }
                }
            }
            w.write_record(&header).unwrap();
            for row in &r.rows {
                let mut rec = Vec::new();
                for c in &r.columns {
                    let v = row.get(&c.name).cloned().unwrap_or(Value::Null);
                    if c.noisy {
                        for k in ["value", "stddev", "ci_low", "ci_high"] {
                            rec.push(
                                v.get(k)
                                    .map(|x| match x {
                                        Value::Null => String::new(),
                                        Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    })
                                    .unwrap_or_default(),
                            );
                        }
                    } else {
                        rec.push(match v {
                            Value::Null => String::new(),
                            Value::String(s) => s,
                            other => other.to_string(),
                        });
                    }
                }
                w.write_record(&rec).unwrap();
            }
            String::from_utf8(w.into_inner().unwrap()).unwrap()
        }
        OutputFormat::Table => {
            let headers: Vec<String> = r.columns.iter().map(|c| c.name.clone()).collect();
            let rows: Vec<Vec<String>> =
                r.rows.iter().map(|row| r.columns.iter().map(|c| cell_text(row.get(&c.name).unwrap_or(&Value::Null))).collect()).collect();
            let mut s = table(&headers, &rows);
            if let Some(p) = &r.privacy {
                s.push_str(&format!(
                    "\nprivacy: ε={} δ={} spent{} · remaining ε={} δ={} · ledger entry {} · unit {} · {} · {}\n",
                    p.epsilon,
                    p.delta,
                    if p.replayed { " (replayed answer)" } else { "" },
                    fmt_eps(p.remaining_epsilon),
                    p.remaining_delta,
                    p.entry.map(|e| e.to_string()).unwrap_or("-".into()),
                    p.unit,
                    p.mechanism,
                    p.bounding
                ));
            }
            for n in &r.notes {
                s.push_str(&format!("note: {n}\n"));
            }
            s
        }
    }
}

pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let width = |s: &str| unicode_width(s);
    let mut w: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(width(c));
        }
    }
    let mut s = String::new();
    let line = |cells: &[String], s: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            s.push_str(&" ".repeat(w[i].saturating_sub(width(c))));
        }
        s.push('\n');
    };
    line(headers, &mut s);
    let rule: Vec<String> = w.iter().map(|n| "─".repeat(*n)).collect();
    line(&rule, &mut s);
    for r in rows {
        line(r, &mut s);
    }
    s
}

/// Display width (emoji count as two columns).
fn unicode_width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x200D | 0xFE0F | 0xFE0E => 0,
            0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B00..=0x2BFF | 0x3000..=0x9FFF | 0xAC00..=0xD7AF | 0xFF00..=0xFFEF => 2,
            _ => 1,
        })
        .sum()
}

pub fn render_status(s: &Status, entries: Option<&[Entry]>, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let v = serde_json::json!({
                "total_epsilon": s.total_epsilon.to_f64(),
                "total_delta": s.total_delta.to_f64(),
                "spent_epsilon": s.spent_epsilon,
                "spent_delta": s.spent_delta.to_f64(),
                "remaining_epsilon": s.remaining_epsilon,
                "remaining_delta": s.remaining_delta.to_f64(),
                "basic_epsilon": s.spent.basic_epsilon.to_f64(),
                "basic_epsilon_exact": s.spent.basic_epsilon.to_string(),
                "zcdp_epsilon": s.spent.zcdp_epsilon,
                "rdp_epsilon": s.spent.rdp_epsilon,
                "pld_epsilon": s.spent.pld_epsilon,
                "accountant": s.spent.accountant,
                "head": s.head,
                "entries": entries.map(|e| serde_json::to_value(e).unwrap()).unwrap_or(Value::from(s.entries)),
            });
            serde_json::to_string_pretty(&v).unwrap() + "\n"
        }
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            if let Some(es) = entries {
                w.write_record(["id", "time", "kind", "epsilon", "delta", "mechanisms", "text", "hash"]).unwrap();
                for e in es {
                    w.write_record([
                        e.id.to_string(),
                        e.time.clone(),
                        e.kind.clone(),
                        e.epsilon.to_string(),
                        e.delta.to_string(),
                        mech(e),
                        e.text.clone(),
                        e.hash.clone(),
                    ])
                    .unwrap();
                }
            } else {
                w.write_record(["total_epsilon", "spent_epsilon", "remaining_epsilon", "total_delta", "spent_delta", "remaining_delta", "entries"]).unwrap();
                w.write_record([
                    s.total_epsilon.to_string(),
                    fmt_eps(s.spent_epsilon),
                    fmt_eps(s.remaining_epsilon),
                    s.total_delta.to_string(),
                    s.spent_delta.to_string(),
                    s.remaining_delta.to_string(),
                    s.entries.to_string(),
                ])
                .unwrap();
            }
            String::from_utf8(w.into_inner().unwrap()).unwrap()
        }
        OutputFormat::Table => {
            let mut out = String::new();
            out.push_str(&format!("budget   ε={}  δ={}\n", s.total_epsilon, s.total_delta));
            out.push_str(&format!(
                "spent    ε={} (basic composition: {}){}  δ={}\n",
                fmt_eps(s.spent_epsilon),
                s.spent.basic_epsilon,
                match (s.spent.zcdp_epsilon, s.spent.rdp_epsilon) {
                    (Some(z), Some(r)) => format!("; zCDP {}, RDP {}", fmt_eps(z), fmt_eps(r)),
                    _ => String::new(),
                },
                s.spent_delta
            ));
            if let Some(p) = s.spent.pld_epsilon {
                out.push_str(&format!("         PLD bound {} (reported for reference; admission uses basic/zCDP/RDP)\n", fmt_eps(p)));
            }
            out.push_str(&format!("remains  ε={}  δ={}\n", fmt_eps(s.remaining_epsilon), s.remaining_delta));
            out.push_str(&format!("ledger   {} entries, head {}\n", s.entries, &s.head[..16.min(s.head.len())]));
            if let Some(es) = entries {
                out.push('\n');
                let headers: Vec<String> = ["id", "time", "kind", "ε", "δ", "mechanisms", "query"].iter().map(|x| x.to_string()).collect();
                let rows: Vec<Vec<String>> = es
                    .iter()
                    .map(|e| {
                        let mut t: String = e.text.split_whitespace().collect::<Vec<_>>().join(" ");
                        if t.chars().count() > 60 {
                            t = t.chars().take(57).collect::<String>() + "…";
                        }
                        vec![e.id.to_string(), e.time.clone(), e.kind.clone(), e.epsilon.to_string(), e.delta.to_string(), mech(e), t]
                    })
                    .collect();
                out.push_str(&table(&headers, &rows));
            }
            out
        }
    }
}

fn mech(e: &Entry) -> String {
    use crate::privacy::accountant::Release;
    let mut pure = 0;
    let mut z = 0;
    let mut a = 0;
    for r in &e.releases {
        match r {
            Release::Pure { .. } => pure += 1,
            Release::Zcdp { .. } => z += 1,
            Release::Approx { .. } => a += 1,
        }
    }
    let mut parts = Vec::new();
    if pure > 0 {
        parts.push(format!("{pure}×pure"));
    }
    if z > 0 {
        parts.push(format!("{z}×zCDP"));
    }
    if a > 0 {
        parts.push(format!("{a}×(ε,δ)"));
    }
    if parts.is_empty() { "-".into() } else { parts.join(" ") }
}

pub fn render_verify(v: &VerifyReport, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(v).unwrap() + "\n",
        _ => {
            if v.ok {
                format!("ledger verified: {} entries, hash chain intact\n", v.entries)
            } else {
                format!("ledger verification FAILED at entry {}: {}\n", v.first_bad.unwrap_or(0), v.problem.clone().unwrap_or_default())
            }
        }
    }
}
