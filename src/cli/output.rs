//! Rendering results for people (table with ± half-widths, CSV, JSON).

use serde_json::Value;

use super::OutputFormat;
use dpq::ledger::{Entry, Status, VerifyReport};
pub use dpq::present::{cell_text, fmt_f, table};
use dpq::session::QueryResult;

pub fn render(r: &QueryResult, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let columns: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
            let v = serde_json::json!({
                "columns": columns,
                "column_types": r.columns,
                "rows": r.rows,
                "privacy": r.privacy,
                "bias": r.bias,
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
            // the privacy metadata, on every row (CSV has no other place a reader keeps)
            let meta: Vec<(&str, String)> = match &r.privacy {
                Some(p) => vec![
                    ("dpq_epsilon", p.charged_epsilon.clone()),
                    ("dpq_delta", p.charged_delta.clone()),
                    ("dpq_ledger_entry", p.entry.map(|e| e.to_string()).unwrap_or_default()),
                    ("dpq_replayed", p.replayed.to_string()),
                    ("dpq_mechanism", p.mechanism.clone()),
                    ("dpq_bounding", p.bounding.clone()),
                    ("dpq_share_of_people_cut", r.bias.as_ref().and_then(|b| b.share_of_people_cut).map(|x| x.to_string()).unwrap_or_default()),
                    ("dpq_result_hash", p.result_hash.clone().unwrap_or_default()),
                ],
                None => vec![],
            };
            header.extend(meta.iter().map(|(k, _)| k.to_string()));
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
                rec.extend(meta.iter().map(|(_, v)| v.clone()));
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
                    "\nprivacy: ε={} δ={} spent{} · remaining ε={} δ={} ({}) · ledger entry {} · unit {} · {} · {}\n",
                    p.epsilon,
                    p.delta,
                    if p.replayed { " (replayed answer)" } else { "" },
                    p.remaining_epsilon,
                    p.remaining_delta,
                    p.accountant,
                    p.entry.map(|e| e.to_string()).unwrap_or("-".into()),
                    p.unit,
                    p.mechanism,
                    p.bounding
                ));
            }
            if let Some(b) = &r.bias {
                s.push_str(&format!("{}: {}\n", if b.warning { "WARNING bias" } else { "bias" }, b.text));
            }
            for n in &r.notes {
                s.push_str(&format!("note: {n}\n"));
            }
            s
        }
    }
}

pub fn render_status(s: &Status, entries: Option<&[Entry]>, format: OutputFormat) -> String {
    let g = &s.governing;
    match format {
        OutputFormat::Json => {
            let v = serde_json::json!({
                "dataset": s.dataset,
                "accountant": s.budget.rule,
                "governing": { "rule": s.budget.rule.to_string(), "unit": g.unit, "total": g.total, "spent": g.spent, "remaining": g.remaining,
                               "delta_spent": g.delta_spent, "delta_remaining": g.delta_remaining },
                "total_epsilon": s.budget.epsilon,
                "total_delta": s.budget.delta,
                "spent_epsilon": s.epsilon_spent,
                "spent_delta": s.totals.delta,
                "remaining_epsilon": s.remaining_epsilon(),
                "remaining_delta": s.remaining_delta(),
                "basic_epsilon_exact": s.totals.epsilon.to_string(),
                "for_reference": { "basic_epsilon": s.totals.epsilon, "basic_delta": s.totals.delta, "rho": s.totals.rho, "charges": s.totals.charges },
                "head": s.head.to_string(),
                "config_drift": s.config_drift,
                "entries": entries
                    .map(|es| {
                        Value::Array(
                            es.iter()
                                .map(|e| {
                                    let mut v = serde_json::to_value(e).unwrap();
                                    v["hash"] = Value::String(e.hash.clone());
                                    v
                                })
                                .collect(),
                        )
                    })
                    .unwrap_or(Value::from(s.entries)),
            });
            serde_json::to_string_pretty(&v).unwrap() + "\n"
        }
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            if let Some(es) = entries {
                w.write_record(["id", "time", "analyst", "kind", "epsilon", "delta", "mechanisms", "text", "hash"]).unwrap();
                for e in es {
                    w.write_record([
                        e.id.to_string(),
                        e.time.clone(),
                        e.analyst.clone(),
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
                w.write_record([
                    "accountant",
                    "total_epsilon",
                    "spent_epsilon",
                    "remaining_epsilon",
                    "total_delta",
                    "spent_delta",
                    "remaining_delta",
                    "entries",
                ])
                .unwrap();
                w.write_record([
                    s.budget.rule.to_string(),
                    s.budget.epsilon.to_string(),
                    s.epsilon_spent.to_string(),
                    s.remaining_epsilon().to_string(),
                    s.budget.delta.to_string(),
                    s.totals.delta.to_string(),
                    s.remaining_delta().to_string(),
                    s.entries.to_string(),
                ])
                .unwrap();
            }
            String::from_utf8(w.into_inner().unwrap()).unwrap()
        }
        OutputFormat::Table => {
            let mut out = String::new();
            if let Some(d) = &s.config_drift {
                out.push_str(&format!("WARNING: {d}\n\n"));
            }
            out.push_str(&format!("budget   ε={}  δ={}  (admission: {})\n", s.budget.epsilon, s.budget.delta, s.budget.rule));
            out.push_str(&format!("spent    ε={}  δ={}\n", s.epsilon_spent, s.totals.delta));
            out.push_str(&format!("remains  ε={}  δ={}\n", s.remaining_epsilon(), s.remaining_delta()));
            match s.budget.rule {
                dpq::privacy::accountant::filter::Rule::Basic => {
                    out.push_str(&format!("         for reference (not used for admission): Σρ = {} (pure releases as ε²/2)\n", s.totals.rho))
                }
                dpq::privacy::accountant::filter::Rule::Zcdp => out.push_str(&format!(
                    "         governed by Σρ = {} of ρ* = {}; for reference, basic composition: ε={} δ={}\n",
                    g.spent, g.total, s.totals.epsilon, s.totals.delta
                )),
            }
            out.push_str(&format!("ledger   {} entries, {} charges, head {} (publish it: dpq budget --anchor)\n", s.entries, s.totals.charges, s.head));
            if let Some(es) = entries {
                out.push('\n');
                let headers: Vec<String> = ["id", "time", "who", "kind", "ε", "δ", "mechanisms", "what"].iter().map(|x| x.to_string()).collect();
                let rows: Vec<Vec<String>> = es
                    .iter()
                    .map(|e| {
                        let mut t: String = e.text.split_whitespace().collect::<Vec<_>>().join(" ");
                        if dpq::ledger::is_charge(&e.kind) && t.chars().count() > 80 {
                            t = t.chars().take(77).collect::<String>() + "…";
                        }
                        let (eps, del) =
                            if dpq::ledger::is_charge(&e.kind) { (e.epsilon.to_string(), e.delta.to_string()) } else { (String::new(), String::new()) };
                        vec![
                            e.id.to_string(),
                            e.time.clone(),
                            dpq::ledger::printable(&e.analyst),
                            e.kind.clone(),
                            eps,
                            del,
                            mech(e),
                            dpq::ledger::printable(&t),
                        ]
                    })
                    .collect();
                out.push_str(&table(&headers, &rows));
                if let Some(last) = es.last()
                    && last.id < s.entries
                {
                    out.push_str(&format!("… {} more: dpq budget --log --from {}\n", s.entries - last.id, last.id + 1));
                }
            }
            out
        }
    }
}

pub fn render_by_analyst(s: &Status, rows: &[(String, dpq::privacy::accountant::filter::Totals)], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let v: Vec<Value> = rows
                .iter()
                .map(|(a, t)| serde_json::json!({ "analyst": a, "charges": t.charges, "epsilon": t.epsilon, "delta": t.delta, "rho": t.rho }))
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({ "accountant": s.budget.rule, "analysts": v })).unwrap() + "\n"
        }
        _ => {
            let headers: Vec<String> = ["analyst", "charges", "ε (basic)", "δ", "ρ"].iter().map(|x| x.to_string()).collect();
            let body: Vec<Vec<String>> =
                rows.iter().map(|(a, t)| vec![a.clone(), t.charges.to_string(), t.epsilon.to_string(), t.delta.to_string(), t.rho.to_string()]).collect();
            table(&headers, &body)
        }
    }
}

fn mech(e: &Entry) -> String {
    use dpq::privacy::accountant::Release;
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
            let mut out = if v.ok {
                format!(
                    "ledger verified: {} entries, hash chain, running totals and stored results intact, head {}\n",
                    v.entries,
                    v.head.as_ref().map(|h| h.to_string()).unwrap_or_default()
                )
            } else {
                format!("ledger verification FAILED at entry {}: {}\n", v.first_bad.unwrap_or(0), v.problem.clone().unwrap_or_default())
            };
            if !v.unfinished.is_empty() {
                out.push_str(&format!(
                    "note: {} charged entr{} without a result ({}): interrupted runs; running the same query again records {} as failed (never redrawn; --fresh pays for a new attempt)\n",
                    v.unfinished.len(),
                    if v.unfinished.len() == 1 { "y" } else { "ies" },
                    v.unfinished.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
                    if v.unfinished.len() == 1 { "it" } else { "them" }
                ));
            }
            out
        }
    }
}

/// A listing from the configuration (`dpq tables`, `SHOW TABLES`, `DESCRIBE t`).
pub fn render_listing(l: &dpq::config::describe::Listing, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(l).unwrap() + "\n",
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(&l.headers);
            for r in &l.rows {
                let _ = w.write_record(r);
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        OutputFormat::Table => table(&l.headers, &l.rows),
    }
}
