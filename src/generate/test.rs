//! The generator plants the patterns the annual report must show; these tests
//! check they are there (fixed seeds, so the outcome is reproducible).

use std::collections::HashMap;

use super::*;

struct Logs {
    cohort: HashMap<i64, String>,
    /// (user, hour, emoji)
    messages: Vec<(i64, u32, Option<String>)>,
    /// (user, hour, kind)
    calls: Vec<(i64, u32, String)>,
}

fn logs() -> &'static Logs {
    static L: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerateOptions { users: 3000, days: 60, out: dir.path().to_path_buf(), seed: 11, ..Default::default() };
        generate(&opts).unwrap();
        let mut cohort = HashMap::new();
        for r in csv::Reader::from_path(dir.path().join("users.csv")).unwrap().records() {
            let r = r.unwrap();
            cohort.insert(r[0].parse().unwrap(), r[1].to_string());
        }
        let hour = |ts: &str| ts[11..13].parse::<u32>().unwrap();
        let messages = csv::Reader::from_path(dir.path().join("messages.csv"))
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].parse().unwrap(), hour(&r[1]), if r[3].is_empty() { None } else { Some(r[3].to_string()) })
            })
            .collect();
        let calls = csv::Reader::from_path(dir.path().join("calls.csv"))
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[0].parse().unwrap(), hour(&r[1]), r[2].to_string())
            })
            .collect();
        Logs { cohort, messages, calls }
    })
}

#[test]
fn cohort_shares_match_the_model() {
    let l = logs();
    for (c, share) in COHORTS.iter().zip(COHORT_SHARE) {
        let n = l.cohort.values().filter(|v| v == c).count() as f64 / l.cohort.len() as f64;
        // binomial sd at n=3000 is ≤ 0.009; allow 5 sd
        assert!((n - share).abs() < 0.045, "{c}: {n} vs {share}");
    }
}

#[test]
fn activity_is_heavy_tailed() {
    let l = logs();
    let mut per_user: HashMap<i64, u64> = HashMap::new();
    for (u, _, _) in &l.messages {
        *per_user.entry(*u).or_default() += 1;
    }
    let mut counts: Vec<u64> = per_user.values().copied().collect();
    counts.sort_unstable();
    let median = counts[counts.len() / 2] as f64;
    let max = *counts.last().unwrap() as f64;
    assert!(max >= 50.0 * median, "max {max} vs median {median}: not heavy-tailed");
    // the top 1 % send a large share of all messages
    let total: u64 = counts.iter().sum();
    let top: u64 = counts[counts.len() * 99 / 100..].iter().sum();
    assert!(top as f64 / total as f64 > 0.08, "top 1 % share {}", top as f64 / total as f64);
}

#[test]
fn emoji_use_is_skewed_and_differs_by_cohort() {
    let l = logs();
    for (ci, c) in COHORTS.iter().enumerate() {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for (u, _, e) in &l.messages {
            if let Some(e) = e
                && l.cohort[u] == *c
            {
                *counts.entry(e.as_str()).or_default() += 1;
            }
        }
        let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        let total: u64 = v.iter().map(|x| x.1).sum();
        // Zipf: the favourite is far above the median emoji, and the top 5 take a large share
        assert!(v[0].1 > 10 * v[v.len() / 2].1, "{c}: not skewed");
        let top5: u64 = v.iter().take(5).map(|x| x.1).sum();
        assert!(top5 as f64 / total as f64 > 0.3, "{c}: top-5 share {}", top5 as f64 / total as f64);
        assert_eq!(v[0].0, FAVOURITES[ci][0], "{c}: favourite emoji");
    }
}

fn peak_hour(hist: &[u64; 24]) -> usize {
    (0..24).max_by_key(|&h| hist[h]).unwrap()
}

#[test]
fn daily_rhythms_differ_by_cohort() {
    let l = logs();
    let mut hist: HashMap<&str, [u64; 24]> = HashMap::new();
    for (u, h, _) in &l.messages {
        hist.entry(l.cohort[u].as_str()).or_insert([0; 24])[*h as usize] += 1;
    }
    // late sleepers: share of messages after midnight (0–3h)
    let late = |c: &str| {
        let h = hist[c];
        (h[0] + h[1] + h[2] + h[3]) as f64 / h.iter().sum::<u64>() as f64
    };
    assert!(late("00s") > 3.0 * late("55+"), "00s {} vs 55+ {}", late("00s"), late("55+"));
    assert!(peak_hour(&hist["00s"]) >= 21, "00s peak {}", peak_hour(&hist["00s"]));
    assert!(peak_hour(&hist["55+"]) <= 9, "55+ peak {}", peak_hour(&hist["55+"]));
    // the 55+ make their video calls after dinner
    let mut video: HashMap<&str, (u64, u64)> = HashMap::new();
    for (u, h, k) in &l.calls {
        if k == "video" {
            let e = video.entry(l.cohort[u].as_str()).or_default();
            e.1 += 1;
            if (19..=21).contains(h) {
                e.0 += 1;
            }
        }
    }
    let share = |c: &str| video[c].0 as f64 / video[c].1 as f64;
    assert!(share("55+") > 0.5 && share("55+") > share("80s") + 0.15, "55+ {} vs 80s {}", share("55+"), share("80s"));
}

#[test]
fn deterministic_for_a_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mk = |d: &std::path::Path, seed| GenerateOptions { users: 50, days: 10, out: d.to_path_buf(), seed, ..Default::default() };
    generate(&mk(a.path(), 5)).unwrap();
    generate(&mk(b.path(), 5)).unwrap();
    assert_eq!(std::fs::read(a.path().join("messages.csv")).unwrap(), std::fs::read(b.path().join("messages.csv")).unwrap());
    let c = tempfile::tempdir().unwrap();
    generate(&mk(c.path(), 6)).unwrap();
    assert_ne!(std::fs::read(a.path().join("messages.csv")).unwrap(), std::fs::read(c.path().join("messages.csv")).unwrap());
}

#[test]
fn year_over_year_growth_when_longer_than_a_year() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenerateOptions {
        users: 400,
        days: 730,
        out: dir.path().to_path_buf(),
        seed: 3,
        messages_per_day: 0.3,
        start: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        ..Default::default()
    };
    generate(&opts).unwrap();
    let (mut y1, mut y2) = (0u64, 0u64);
    for r in csv::Reader::from_path(dir.path().join("messages.csv")).unwrap().records() {
        let r = r.unwrap();
        if r[1].starts_with("2024") { y1 += 1 } else { y2 += 1 }
    }
    assert!(y2 as f64 > 1.15 * y1 as f64, "2025 {y2} vs 2024 {y1}");
}
