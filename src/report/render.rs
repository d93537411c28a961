//! index.html (self-contained: inline CSS and SVG, no scripts, no network) and
//! report.md.

use std::fmt::Write;

use serde_json::Value;

use super::spec::Chart;
use super::svg::{self, Point, esc, num};
use super::{ReportResult, SectionResult};
use crate::engine::result::QueryResult;

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "∅".into(),
        Value::Number(n) => n.as_i64().map(|i| i.to_string()).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn value_col(s: &SectionResult) -> Option<String> {
    s.spec.as_ref().and_then(|x| x.value.clone()).or_else(|| s.result.columns.iter().find(|c| c.noisy).map(|c| c.name.clone()))
}

fn x_col(s: &SectionResult) -> Option<String> {
    s.spec.as_ref().and_then(|x| x.x.clone()).or_else(|| s.result.columns.iter().find(|c| !c.noisy).map(|c| c.name.clone()))
}

fn scale(s: &SectionResult) -> f64 {
    s.spec.as_ref().and_then(|x| x.scale).unwrap_or(1.0)
}

fn points(s: &SectionResult, xcol: &str, vcol: &str) -> Vec<Point> {
    let k = scale(s);
    let r = &s.result;
    (0..r.rows.len())
        .filter_map(|i| {
            let label = key_text(r.rows[i].get(xcol)?);
            let c = r.cell(i, vcol)?;
            Some((label, c.value.as_f64()? * k, c.ci_low * k, c.ci_high * k))
        })
        .collect()
}

fn sorted_numeric(mut p: Vec<Point>) -> Vec<Point> {
    if p.iter().all(|x| x.0.parse::<f64>().is_ok()) {
        p.sort_by(|a, b| a.0.parse::<f64>().unwrap().partial_cmp(&b.0.parse::<f64>().unwrap()).unwrap());
    }
    p
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Month numbers (a column named like `month` holding 1–12) as month names.
fn month_labels(col: &str, p: Vec<Point>) -> Vec<Point> {
    let is_month = col.to_ascii_lowercase().contains("month") && p.iter().all(|x| x.0.parse::<u32>().is_ok_and(|m| (1..=12).contains(&m)));
    if !is_month {
        return p;
    }
    p.into_iter().map(|(l, v, lo, hi)| (MONTHS[l.parse::<usize>().unwrap() - 1].to_string(), v, lo, hi)).collect()
}

/// A derived figure (growth, share) shown only when its interval is bounded
/// and not absurdly wide; else why not.
fn derived_shown(d: &super::Derived) -> Result<(), String> {
    if !d.ci_low.is_finite() || !d.ci_high.is_finite() || !d.value.is_finite() {
        return Err("not enough data at this ε: the interval is unbounded (its denominator could be zero)".into());
    }
    if d.ci_high - d.ci_low > 200.0 {
        return Err(format!("not enough data at this ε: the {:.0}% interval is {:.0} percentage points wide", d.confidence * 100.0, d.ci_high - d.ci_low));
    }
    Ok(())
}

fn chart(s: &SectionResult) -> String {
    let Some(vcol) = value_col(s) else { return table_html(&s.result) };
    let xcol = x_col(s).unwrap_or_default();
    let unit = s.spec.as_ref().and_then(|x| x.unit.clone()).unwrap_or_default();
    match s.chart {
        Chart::Headline => {
            let mut h = String::from("<div class=\"headlines\">");
            if !s.derived.is_empty() {
                for d in &s.derived {
                    if let Err(why) = derived_shown(d) {
                        let _ = write!(
                            h,
                            "<div class=\"headline\"><div class=\"big na\">—</div><div class=\"ci\">{}</div><div class=\"label\">{}</div></div>",
                            esc(&why),
                            esc(&d.label)
                        );
                        continue;
                    }
                    let _ = write!(
                        h,
                        "<div class=\"headline\"><div class=\"big\">{}{:.1}%</div><div class=\"ci\">{:.0}% CI {:+.1}% to {:+.1}%</div><div class=\"label\">{}</div></div>",
                        if d.value >= 0.0 { "+" } else { "" },
                        d.value,
                        d.confidence * 100.0,
                        d.ci_low,
                        d.ci_high,
                        esc(&d.label)
                    );
                }
            } else if let Some(c) = s.result.cell(0, &vcol) {
                let k = scale(s);
                let v = c.value.as_f64().unwrap_or(f64::NAN) * k;
                let _ = write!(
                    h,
                    "<div class=\"headline\"><div class=\"big\">{} <span class=\"unit\">{}</span></div><div class=\"ci\">± {} ({:.0}% CI {} – {})</div></div>",
                    num(v),
                    esc(&unit),
                    num((c.ci_high - c.ci_low) / 2.0 * k.abs()),
                    c.confidence * 100.0,
                    num(c.ci_low * k),
                    num(c.ci_high * k)
                );
            }
            h.push_str("</div>");
            h
        }
        Chart::Bar | Chart::Hbar | Chart::Line => {
            let share = s.spec.as_ref().and_then(|x| x.derive.as_ref()).is_some_and(|d| d.share.is_some());
            let p = if share {
                s.derived.iter().map(|d| (d.label.clone(), d.value, d.ci_low, d.ci_high)).collect()
            } else {
                month_labels(&xcol, sorted_numeric(points(s, &xcol, &vcol)))
            };
            // a value without a bounded interval (a share of nothing) is not drawn
            let p: Vec<Point> = p
                .into_iter()
                .map(
                    |(l, v, lo, hi)| if v.is_finite() && lo.is_finite() && hi.is_finite() { (l, v, lo, hi) } else { (format!("{l} (no data)"), 0.0, 0.0, 0.0) },
                )
                .collect();
            let chart = match s.chart {
                Chart::Bar => svg::bars(&p, &s.title),
                Chart::Hbar => svg::hbars(&p, &s.title),
                _ => svg::line(&p, &s.title),
            };
            if share {
                // shares are percentages: say so on the axis
                format!(
                    "<p class=\"axis\">% of {}</p>{chart}",
                    esc(&s.spec.as_ref().and_then(|x| x.derive.as_ref()).and_then(|d| d.share.as_ref()).map(|v| v.1.clone()).unwrap_or_default())
                )
            } else {
                chart
            }
        }
        Chart::Heatmap => {
            let ycol = s.spec.as_ref().and_then(|x| x.y.clone()).unwrap_or_default();
            let r = &s.result;
            let mut rows: Vec<String> = Vec::new();
            let mut cols: Vec<String> = Vec::new();
            for row in &r.rows {
                let a = key_text(row.get(&xcol).unwrap_or(&Value::Null));
                let b = key_text(row.get(&ycol).unwrap_or(&Value::Null));
                if !rows.contains(&a) {
                    rows.push(a);
                }
                if !cols.contains(&b) {
                    cols.push(b);
                }
            }
            if cols.iter().all(|c| c.parse::<f64>().is_ok()) {
                cols.sort_by(|a, b| a.parse::<f64>().unwrap().partial_cmp(&b.parse::<f64>().unwrap()).unwrap());
            }
            let k = scale(s);
            let mut cells = vec![vec![None; cols.len()]; rows.len()];
            for (i, row) in r.rows.iter().enumerate() {
                let a = key_text(row.get(&xcol).unwrap_or(&Value::Null));
                let b = key_text(row.get(&ycol).unwrap_or(&Value::Null));
                if let (Some(ri), Some(ci), Some(c)) = (rows.iter().position(|x| *x == a), cols.iter().position(|x| *x == b), r.cell(i, &vcol)) {
                    cells[ri][ci] = Some((c.value.as_f64().unwrap_or(0.0) * k, c.ci_low * k, c.ci_high * k));
                }
            }
            let mut out = svg::heatmap(&rows, &cols, &cells, &s.title);
            // the values and intervals, readable in print
            out.push_str("<table class=\"values\"><thead><tr><th></th>");
            for c in &cols {
                let _ = write!(out, "<th>{}</th>", esc(c));
            }
            out.push_str("</tr></thead><tbody>");
            for (i, rname) in rows.iter().enumerate() {
                let _ = write!(out, "<tr><th>{}</th>", esc(rname));
                for cell in &cells[i] {
                    match cell {
                        Some((v, lo, hi)) => {
                            let _ = write!(out, "<td>{}<br><small>{}–{}</small></td>", num(*v), num(*lo), num(*hi));
                        }
                        None => out.push_str("<td>–</td>"),
                    }
                }
                out.push_str("</tr>");
            }
            out.push_str("</tbody></table>");
            out
        }
        Chart::Topk => {
            let ycol = s.spec.as_ref().and_then(|x| x.y.clone()).unwrap_or_default();
            let kk = s.spec.as_ref().and_then(|x| x.k).unwrap_or(5);
            let r = &s.result;
            let mut groups: Vec<(String, Vec<Point>)> = Vec::new();
            for (i, row) in r.rows.iter().enumerate() {
                let g = key_text(row.get(&xcol).unwrap_or(&Value::Null));
                let item = key_text(row.get(&ycol).unwrap_or(&Value::Null));
                let Some(c) = r.cell(i, &vcol) else { continue };
                let p = (item, c.value.as_f64().unwrap_or(0.0), c.ci_low, c.ci_high);
                match groups.iter_mut().find(|x| x.0 == g) {
                    Some(x) => x.1.push(p),
                    None => groups.push((g, vec![p])),
                }
            }
            for (_, items) in &mut groups {
                let idx = crate::privacy::topk::top_k(&items.iter().map(|p| p.1).collect::<Vec<_>>(), kk);
                *items = idx.into_iter().map(|i| items[i].clone()).collect();
            }
            svg::topk(&groups, &s.title)
        }
        Chart::Table => table_html(&s.result),
    }
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Object(o) if o.contains_key("ci_low") => {
            let lo = o["ci_low"].as_f64().unwrap_or(f64::NAN);
            let hi = o["ci_high"].as_f64().unwrap_or(f64::NAN);
            let x = o["value"].as_f64().unwrap_or(f64::NAN);
            let half = (hi - lo) / 2.0;
            if ((x - lo) - (hi - x)).abs() <= 0.01 * half.abs().max(1e-12) {
                format!("{} ± {}", num(x), num(half))
            } else {
                format!("{} [{}, {}]", num(x), num(lo), num(hi))
            }
        }
        other => key_text(other),
    }
}

fn table_html(r: &QueryResult) -> String {
    let mut s = String::from("<table><thead><tr>");
    for c in &r.columns {
        let _ = write!(s, "<th>{}</th>", esc(&c.name));
    }
    s.push_str("</tr></thead><tbody>");
    for row in &r.rows {
        s.push_str("<tr>");
        for c in &r.columns {
            let _ = write!(s, "<td>{}</td>", esc(&cell_text(row.get(&c.name).unwrap_or(&Value::Null))));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// The plain-language privacy statement.
pub fn statement(r: &ReportResult) -> Vec<String> {
    let p = &r.privacy;
    let mut v = vec![
        format!(
            "Every number in this report was computed with differential privacy. The unit of privacy is one person (the `{}` column): each figure would be almost equally likely whether or not any one person's data were included.",
            p.unit
        ),
        format!(
            "The report spent ε = {} and δ = {} of the dataset's lifetime budget (ε = {}, δ = {}); ε = {} and δ = {} remain for future releases.",
            p.epsilon, p.delta, p.total_epsilon, p.total_delta, p.remaining_epsilon, p.remaining_delta
        ),
        format!(
            "Each person's influence was bounded before noise was added (per section, under “How this was computed”: how many rows and groups one person may contribute, chosen from the data where not set; numeric values were clamped to declared ranges). Noise was drawn with exact discrete {} samplers from a cryptographic random generator.",
            if p.mechanism.to_ascii_lowercase().contains("gauss") { "Gaussian" } else { "Laplace" }
        ),
        format!(
            "Error bars are {:.0}% confidence intervals for the random noise. Bias from bounding is stated per section: when people contribute more than the limits allow, counts and sums count less than the true totals (each section gives a DP estimate of the share of people cut).",
            p.confidence * 100.0
        ),
        format!(
            "Audit: this report was charged as ledger entry #{} (hash {}) of dataset {}; the figures above are the stored result whose SHA-256 is {}, recorded in the ledger whose head was {} when this was written. Anyone can check them against the dataset's public statement (`dpq budget --export DIR`, then `dpq verify-statement DIR`); asking for the same report again returns these same numbers at no cost.",
            p.entry,
            p.entry_hash,
            p.dataset,
            p.result_hash.clone().unwrap_or_default(),
            p.ledger_head.clone().unwrap_or_default()
        ),
    ];
    if p.replayed {
        v.push("These figures were replayed from the ledger: re-running the report did not spend any budget.".into());
    }
    v
}

const CSS: &str = r#"
:root{--ink:#1f2937;--muted:#6b7280;--card:#ffffff;--bg:#f6f7fb;--accent:#3b6fd8}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif,"Noto Color Emoji","Apple Color Emoji","Segoe UI Emoji";line-height:1.5}
main{max-width:900px;margin:0 auto;padding:16px}
header h1{margin:8px 0 0;font-size:1.8rem}
header p{margin:4px 0;color:var(--muted)}
section{background:var(--card);border-radius:12px;padding:16px;margin:16px 0;box-shadow:0 1px 3px #0001}
section h2{margin:0 0 4px;font-size:1.2rem}
.meta{color:var(--muted);font-size:.85rem;margin:0 0 8px}
.headlines{display:flex;flex-wrap:wrap;gap:16px}
.headline .big{font-size:2.4rem;font-weight:700;color:var(--accent)}
.headline .unit{font-size:1rem;color:var(--muted);font-weight:400}
.headline .ci,.headline .label{color:var(--muted)}
.topk{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:8px}
.topk h4{margin:4px 0}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #e5e7eb;padding:4px 6px;text-align:left}
.privacy{border-left:4px solid var(--accent)}
.privacy li{margin:4px 0;overflow-wrap:anywhere}
footer{color:var(--muted);font-size:.8rem;text-align:center;margin:24px 0}
.values{font-size:.7rem;margin-top:6px}.values td,.values th{padding:2px 3px;text-align:right}.values small{color:var(--muted)}
.warn{color:#92400e;background:#fef3c7;padding:4px 8px;border-radius:6px;font-size:.85rem}
.axis{color:var(--muted);font-size:.8rem;margin:0}
.big.na{color:var(--muted)}
details.how summary{color:var(--muted);font-size:.8rem;cursor:pointer}
@media print{details.how{display:block}details.how>*{display:block}}
svg text{font-family:inherit}
@media (max-width:480px){header h1{font-size:1.4rem}.headline .big{font-size:1.8rem}}
"#;

pub fn html(r: &ReportResult) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body><main>",
        esc(&r.title)
    );
    let _ = write!(s, "<header><h1>{}</h1>", esc(&r.title));
    if let Some(sub) = &r.subtitle {
        let _ = write!(s, "<p>{}</p>", esc(sub));
    }
    let _ = write!(
        s,
        "<p>{}Differentially private: ε = {} spent · {:.0}% confidence intervals · ledger entry #{}</p></header>",
        r.period.as_ref().map(|p| format!("{} · ", esc(p))).unwrap_or_default(),
        esc(&r.privacy.epsilon),
        r.privacy.confidence * 100.0,
        r.privacy.entry
    );
    for sec in &r.sections {
        let _ = write!(s, "<section id=\"{}\"><h2>{}</h2>", esc(&sec.id), esc(&sec.title));
        if let Some(d) = &sec.description {
            let _ = write!(s, "<p>{}</p>", esc(d));
        }
        s.push_str(&chart(sec));
        if let Some(n) = &sec.note {
            let _ = write!(s, "<p class=\"meta\">{}</p>", esc(n));
        }
        if let Some(b) = sec.result.bias.as_ref().filter(|b| b.warning) {
            let _ = write!(s, "<p class=\"warn\">{}</p>", esc(&b.text));
        }
        let _ = write!(
            s,
            "<details class=\"how\"><summary>How this was computed</summary><p class=\"meta\">ε = {} · δ = {} · {}</p>",
            esc(&sec.epsilon),
            esc(&sec.delta),
            esc(&sec.bounding)
        );
        if let Some(b) = &sec.result.bias {
            let _ = write!(s, "<p class=\"meta\">{}</p>", esc(&b.text));
        }
        s.push_str("</details></section>");
    }
    s.push_str("<section class=\"privacy\" id=\"privacy\"><h2>How these numbers protect people</h2><ul>");
    for line in statement(r) {
        let _ = write!(s, "<li>{}</li>", esc(&line));
    }
    s.push_str("</ul></section>");
    let _ = writeln!(s, "<footer>Generated by dpq at {} · no scripts, no network requests</footer></main></body></html>", esc(&r.generated_at));
    s
}

pub fn markdown(r: &ReportResult) -> String {
    let mut s = format!("# {}\n\n", r.title);
    if let Some(sub) = &r.subtitle {
        let _ = writeln!(s, "{sub}\n");
    }
    for sec in &r.sections {
        let _ = writeln!(s, "## {}\n", sec.title);
        if let Some(d) = &sec.description {
            let _ = writeln!(s, "{d}\n");
        }
        let _ = writeln!(s, "_ε = {} · {}_\n", sec.epsilon, sec.bounding);
        if let Some(b) = &sec.result.bias {
            let _ = writeln!(s, "_{}_\n", b.text);
        }
        for d in &sec.derived {
            match derived_shown(d) {
                Ok(()) => {
                    let _ = writeln!(s, "- {}: **{:.1}%** ({:.0}% CI {:.1}% to {:.1}%)", d.label, d.value, d.confidence * 100.0, d.ci_low, d.ci_high);
                }
                Err(why) => {
                    let _ = writeln!(s, "- {}: {why}", d.label);
                }
            }
        }
        if !sec.derived.is_empty() {
            s.push('\n');
        }
        let r = &sec.result;
        let _ = writeln!(s, "| {} |", r.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "|{}", r.columns.iter().map(|_| "---|").collect::<String>());
        for row in &r.rows {
            let _ = writeln!(s, "| {} |", r.columns.iter().map(|c| cell_text(row.get(&c.name).unwrap_or(&Value::Null))).collect::<Vec<_>>().join(" | "));
        }
        s.push('\n');
    }
    s.push_str("## Privacy\n\n");
    for line in statement(r) {
        let _ = writeln!(s, "- {line}");
    }
    s
}
