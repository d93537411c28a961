//! Presentation shared by the CLI and reports: number formatting, noisy cells
//! as text, and plain-text tables (display width from `unicode-width`).

use serde_json::Value;

pub fn num(v: &Value) -> String {
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
    // −0 prints as 0
    let f = if f == 0.0 { 0.0 } else { f };
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

/// A noisy cell: `value ± half-width` when its interval is symmetric about the
/// value, else `value [lo, hi]` (a count clipped at 0, a mean's ratio interval,
/// a quantile's rank interval).
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Object(o) if o.contains_key("ci_low") => {
            let lo = o["ci_low"].as_f64().unwrap_or(f64::NAN);
            let hi = o["ci_high"].as_f64().unwrap_or(f64::NAN);
            let x = o["value"].as_f64().unwrap_or(f64::NAN);
            let half = (hi - lo) / 2.0;
            if !lo.is_finite() || !hi.is_finite() {
                format!("{} (interval unbounded: not enough data at this ε)", num(&o["value"]))
            } else if x.is_finite() && ((x - lo) - (hi - x)).abs() <= 0.01 * half.abs().max(1e-12) {
                format!("{} ± {}", num(&o["value"]), fmt_f(half))
            } else {
                format!("{} [{}, {}]", num(&o["value"]), fmt_f(lo), fmt_f(hi))
            }
        }
        other => num(other),
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

/// Display width on a terminal (wide characters such as emoji and CJK count as two).
fn unicode_width(s: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(s)
}
