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
    // whole numbers print whole (`± 7`, `[0, 9]`, not `± 7.000`, `[0.0000, 9.000]`)
    if f.fract() == 0.0 && a < 1e15 {
        return format!("{f:.0}");
    }
    let s = if a >= 1e6 || (a > 0.0 && a < 1e-3) {
        return format!("{f:.4e}");
    } else if a >= 1000.0 {
        format!("{f:.1}")
    } else if a >= 1.0 {
        format!("{f:.3}")
    } else {
        format!("{f:.4}")
    };
    // no trailing zeros after the point: 0.5, not 0.5000
    let t = s.trim_end_matches('0');
    t.strip_suffix('.').unwrap_or(t).to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_without_padding() {
        assert_eq!(fmt_f(7.0), "7");
        assert_eq!(fmt_f(-0.0), "0");
        assert_eq!(fmt_f(0.5), "0.5");
        assert_eq!(fmt_f(221.91745), "221.917");
        assert_eq!(fmt_f(27261.04), "27261");
        assert_eq!(fmt_f(27261.25), "27261.2");
        assert_eq!(fmt_f(1.5e7), "15000000");
        assert_eq!(fmt_f(1.5e-5), "1.5000e-5");
        let cell = serde_json::json!({"value": 2, "ci_low": 0.0, "ci_high": 9.0});
        assert_eq!(cell_text(&cell), "2 [0, 9]");
        let cell = serde_json::json!({"value": 286, "ci_low": 279.0, "ci_high": 293.0});
        assert_eq!(cell_text(&cell), "286 ± 7");
    }
}
