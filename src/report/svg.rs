//! Charts as inline SVG, written by hand.
//!
//! Why not a plotting crate: plotters' SVG backend needs a font backend to lay
//! out text (ttf/ab_glyph with bundled font files) and cannot rely on the
//! browser's font fallback for emoji and CJK labels, while our five chart kinds
//! are a few rectangles, lines and text elements each. Hand-written SVG keeps the
//! report dependency-free, lets labels render with the reader's system fonts
//! (emoji, Chinese), and scales to phone width through `viewBox`.

use std::fmt::Write;

/// (label, value, ci_low, ci_high)
pub type Point = (String, f64, f64, f64);

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}B", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const ACCENT: &str = "#3b6fd8";
const BAND: &str = "#3b6fd833";
const INK: &str = "#1f2937";
const GRID: &str = "#e5e7eb";

fn nice_max(v: f64) -> f64 {
    if !(v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// Horizontal grid lines with their value labels at the ticks of `max`.
fn grid_lines(s: &mut String, max: f64, left: f64, w: f64, y: &dyn Fn(f64) -> f64) {
    for t in ticks(max) {
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{w}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"{GRID}\"/><text x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\" font-size=\"11\" fill=\"{INK}\">{3}</text>",
            y(t),
            left - 6.0,
            y(t) + 4.0,
            num(t)
        );
    }
}

fn ticks(max: f64) -> Vec<f64> {
    (0..=4).map(|i| max * i as f64 / 4.0).collect()
}

fn start(w: f64, h: f64, kind: &str, title: &str) -> String {
    format!(
        "<svg class=\"chart {kind}\" viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(title)
    )
}

/// Vertical bars with error bars.
pub fn bars(points: &[Point], title: &str) -> String {
    let (w, h, left, bottom, top) = (640.0, 300.0, 56.0, 48.0, 16.0);
    let max = nice_max(points.iter().map(|p| p.3.max(p.1)).fold(0.0, f64::max));
    let min = points.iter().map(|p| p.2.min(p.1)).fold(0.0, f64::min).min(0.0);
    let span = max - min;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v - min) / span);
    let mut s = start(w, h, "bar", title);
    grid_lines(&mut s, max, left, w, &y);
    let n = points.len().max(1) as f64;
    let slot = (w - left - 8.0) / n;
    let bw = (slot * 0.7).min(60.0);
    for (i, (label, v, lo, hi)) in points.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let (y0, yv) = (y(0.0), y(*v));
        let _ = write!(
            s,
            "<g><title>{}: {} (CI {} – {})</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{ACCENT}\" rx=\"2\"/>",
            esc(label),
            num(*v),
            num(*lo),
            num(*hi),
            cx - bw / 2.0,
            yv.min(y0),
            (y0 - yv).abs()
        );
        let (ylo, yhi) = (y(*lo), y(*hi));
        let (c0, c1) = (cx - 5.0, cx + 5.0);
        let _ = write!(
            s,
            "<line class=\"errorbar\" x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{ylo:.1}\" y2=\"{yhi:.1}\" stroke=\"{INK}\" stroke-width=\"1.5\"/><line x1=\"{c0:.1}\" x2=\"{c1:.1}\" y1=\"{ylo:.1}\" y2=\"{ylo:.1}\" stroke=\"{INK}\"/><line x1=\"{c0:.1}\" x2=\"{c1:.1}\" y1=\"{yhi:.1}\" y2=\"{yhi:.1}\" stroke=\"{INK}\"/></g>"
        );
        let fs = if n > 12.0 { 9 } else { 12 };
        let _ = write!(s, "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"{fs}\" fill=\"{INK}\">{}</text>", h - bottom + 16.0, esc(label));
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars with error bars (long or emoji labels).
pub fn hbars(points: &[Point], title: &str) -> String {
    hbars_w(points, title, 640.0, 150.0)
}

fn hbars_w(points: &[Point], title: &str, w: f64, left: f64) -> String {
    let row = 26.0;
    let top = 8.0;
    let h = top + row * points.len() as f64 + 28.0;
    let max = nice_max(points.iter().map(|p| p.3.max(p.1)).fold(0.0, f64::max));
    let x = |v: f64| left + (w - left - 24.0) * (v.max(0.0) / max);
    let mut s = start(w, h, "hbar", title);
    for t in ticks(max) {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{1:.1}\" stroke=\"{GRID}\"/><text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{INK}\">{3}</text>",
            x(t),
            h - 24.0,
            h - 8.0,
            num(t)
        );
    }
    for (i, (label, v, lo, hi)) in points.iter().enumerate() {
        let cy = top + row * (i as f64 + 0.5);
        let _ = write!(
            s,
            "<g><title>{}: {} (CI {} – {})</title><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"13\" fill=\"{INK}\">{}</text><rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{ACCENT}\" rx=\"2\"/>",
            esc(label),
            num(*v),
            num(*lo),
            num(*hi),
            left - 8.0,
            cy + 4.5,
            esc(label),
            cy - row * 0.32,
            (x(*v) - left).max(0.0),
            row * 0.64
        );
        let _ = write!(
            s,
            "<line class=\"errorbar\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{cy:.1}\" y2=\"{cy:.1}\" stroke=\"{INK}\" stroke-width=\"1.5\"/></g>",
            x(*lo),
            x(*hi)
        );
    }
    s.push_str("</svg>");
    s
}

/// A line over ordered categories with a confidence band.
pub fn line(points: &[Point], title: &str) -> String {
    let (w, h, left, bottom, top) = (640.0, 280.0, 56.0, 40.0, 16.0);
    let max = nice_max(points.iter().map(|p| p.3.max(p.1)).fold(0.0, f64::max));
    let n = points.len().max(2) as f64;
    let x = |i: usize| left + (w - left - 16.0) * i as f64 / (n - 1.0);
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v.max(0.0) / max);
    let mut s = start(w, h, "line", title);
    grid_lines(&mut s, max, left, w, &y);
    let mut band = String::new();
    for (i, p) in points.iter().enumerate() {
        let _ = write!(band, "{:.1},{:.1} ", x(i), y(p.3));
    }
    for (i, p) in points.iter().enumerate().rev() {
        let _ = write!(band, "{:.1},{:.1} ", x(i), y(p.2));
    }
    let _ = write!(s, "<polygon class=\"band\" points=\"{band}\" fill=\"{BAND}\"/>");
    let pts: Vec<String> = points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.1))).collect();
    let _ = write!(s, "<polyline points=\"{}\" fill=\"none\" stroke=\"{ACCENT}\" stroke-width=\"2\"/>", pts.join(" "));
    let every = (points.len() / 12).max(1);
    for (i, p) in points.iter().enumerate() {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{ACCENT}\"><title>{}: {} (CI {} – {})</title></circle>",
            x(i),
            y(p.1),
            esc(&p.0),
            num(p.1),
            num(p.2),
            num(p.3)
        );
        if i % every == 0 {
            let _ =
                write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{INK}\">{}</text>", x(i), h - bottom + 16.0, esc(&p.0));
        }
    }
    s.push_str("</svg>");
    s
}

/// Rows × columns grid; colour = share of the row total (so rows of different
/// sizes compare), each cell's value and interval in its tooltip.
pub fn heatmap(rows: &[String], cols: &[String], cells: &[Vec<Option<(f64, f64, f64)>>], title: &str) -> String {
    let rotate = cols.iter().any(|c| c.chars().count() > 4);
    let (left, top) = (70.0, if rotate { 78.0 } else { 24.0 });
    let cw = ((640.0 - left - 8.0) / cols.len().max(1) as f64).min(48.0);
    let ch = 26.0;
    let w = left + cw * cols.len() as f64 + 8.0;
    let h = top + ch * rows.len() as f64 + 40.0;
    let mut s = start(w, h, "heatmap", title);
    let every = if cols.len() > 16 { 3 } else { 1 };
    for (j, c) in cols.iter().enumerate() {
        if j % every == 0 {
            let (x, y) = (left + cw * (j as f64 + 0.5), top - 8.0);
            if rotate {
                let _ = write!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"start\" font-size=\"11\" fill=\"{INK}\" transform=\"rotate(-50 {x:.1} {y:.1})\">{}</text>",
                    esc(c)
                );
            } else {
                let _ = write!(s, "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"{INK}\">{}</text>", esc(c));
            }
        }
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"12\" fill=\"{INK}\">{}</text>", left - 8.0, y + ch * 0.65, esc(r));
        let row_total: f64 = cells[i].iter().flatten().map(|c| c.0.max(0.0)).sum();
        let row_max = cells[i].iter().flatten().map(|c| c.0.max(0.0) / row_total.max(1e-300)).fold(0.0, f64::max);
        for (j, cell) in cells[i].iter().enumerate() {
            let x = left + cw * j as f64;
            match cell {
                Some((v, lo, hi)) => {
                    let share = v.max(0.0) / row_total.max(1e-300);
                    let t = (share / row_max.max(1e-300)).clamp(0.0, 1.0);
                    let (r0, g0, b0) = (239.0, 246.0, 255.0);
                    let (r1, g1, b1) = (30.0, 64.0, 175.0);
                    let c = format!("rgb({:.0},{:.0},{:.0})", r0 + (r1 - r0) * t, g0 + (g1 - g0) * t, b0 + (b1 - b0) * t);
                    let _ = write!(
                        s,
                        "<rect class=\"cell\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{c}\"><title>{} · {}: {} (CI {} – {}), {:.1}% of the row</title></rect>",
                        cw - 1.0,
                        ch - 1.0,
                        esc(r),
                        esc(&cols[j]),
                        num(*v),
                        num(*lo),
                        num(*hi),
                        share * 100.0
                    );
                }
                None => {
                    let _ = write!(s, "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f3f4f6\"/>", cw - 1.0, ch - 1.0);
                }
            }
        }
    }
    // the colour legend: white = 0 % of the row, full colour = the row's largest share
    let lx = left;
    let ly = h - 22.0;
    let _ = write!(
        s,
        "<defs><linearGradient id=\"hm-legend\"><stop offset=\"0\" stop-color=\"rgb(239,246,255)\"/><stop offset=\"1\" stop-color=\"rgb(30,64,175)\"/></linearGradient></defs>\
         <rect class=\"legend\" x=\"{lx:.1}\" y=\"{ly:.1}\" width=\"120\" height=\"10\" fill=\"url(#hm-legend)\" stroke=\"#9ca3af\" stroke-width=\"0.5\"/>\
         <text x=\"{lx:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#6b7280\">0 %</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#6b7280\" text-anchor=\"end\">the row's largest share</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#6b7280\">colour: share of the row (values and intervals in the table below)</text>",
        ly + 20.0,
        lx + 120.0,
        ly + 20.0,
        lx + 130.0,
        ly + 9.0
    );
    s.push_str("</svg>");
    s
}

/// Small multiples of horizontal bars: the top items per group.
pub fn topk(groups: &[(String, Vec<Point>)], title: &str) -> String {
    let mut s = String::from("<div class=\"topk\">");
    for (g, items) in groups {
        let _ = write!(s, "<div class=\"topk-group\"><h4>{}</h4>{}</div>", esc(g), hbars_w(items, &format!("{title}: {g}"), 300.0, 44.0));
    }
    s.push_str("</div>");
    s
}
