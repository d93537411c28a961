//! The behavioural model behind `dpq generate`: who the synthetic people are and
//! how they use a messaging app. Every pattern the annual report is expected to
//! show is planted here, so tests can check it comes back out.

use chrono::{Datelike, NaiveDate, Weekday};

pub const COHORTS: [&str; 5] = ["00s", "90s", "80s", "70s", "55+"];
/// Population shares of the cohorts (sum to 1).
pub const COHORT_SHARE: [f64; 5] = [0.24, 0.27, 0.22, 0.15, 0.12];

/// Messages by hour of day (0–23), per cohort. The 00s are late sleepers (busy
/// past midnight, quiet until mid-morning); the 55+ are early risers who go to
/// bed around nine.
pub const MESSAGE_HOURS: [[f64; 24]; 5] = [
    [6.0, 4.5, 2.5, 1.0, 0.4, 0.2, 0.2, 0.4, 0.8, 1.5, 2.5, 3.5, 4.5, 4.5, 4.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.0, 9.5],
    [3.0, 1.5, 0.6, 0.3, 0.2, 0.2, 0.5, 1.5, 3.0, 4.0, 4.0, 5.0, 6.0, 5.0, 4.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0, 7.0, 5.0],
    [1.0, 0.5, 0.2, 0.1, 0.1, 0.3, 1.0, 3.0, 5.0, 6.0, 5.0, 5.0, 6.0, 5.0, 5.0, 5.0, 5.0, 6.0, 6.0, 7.0, 7.0, 6.0, 4.0, 2.0],
    [0.4, 0.2, 0.1, 0.1, 0.2, 0.8, 3.0, 5.0, 6.0, 6.0, 5.0, 5.0, 5.0, 4.0, 4.0, 4.0, 5.0, 6.0, 6.0, 6.0, 5.0, 3.5, 1.5, 0.6],
    [0.2, 0.1, 0.1, 0.1, 0.5, 2.5, 6.0, 7.0, 7.0, 6.0, 5.0, 5.0, 4.0, 3.0, 3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 3.5, 1.5, 0.6, 0.2],
];

/// Video calls by hour: the 55+ call their families on video after dinner (19–21h).
pub const VIDEO_HOURS: [[f64; 24]; 5] = [
    [2.0, 1.0, 0.3, 0.1, 0.0, 0.0, 0.0, 0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 6.0, 5.5, 4.0],
    [1.0, 0.4, 0.1, 0.0, 0.0, 0.0, 0.1, 0.3, 0.8, 1.0, 1.2, 1.5, 2.0, 1.5, 1.2, 1.2, 1.5, 2.5, 3.5, 5.0, 5.5, 5.0, 3.5, 2.0],
    [0.4, 0.1, 0.0, 0.0, 0.0, 0.0, 0.2, 0.6, 1.0, 1.2, 1.2, 1.2, 1.5, 1.2, 1.2, 1.2, 1.5, 2.5, 3.5, 4.5, 4.5, 3.5, 2.0, 0.8],
    [0.2, 0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.8, 1.2, 1.2, 1.2, 1.2, 1.2, 1.0, 1.0, 1.2, 1.5, 2.5, 3.5, 4.5, 4.0, 2.5, 1.0, 0.4],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.8, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.6, 0.8, 1.0, 1.5, 3.0, 9.0, 10.0, 6.0, 1.0, 0.2],
];

/// Voice calls by hour (daytime), per cohort.
pub const VOICE_HOURS: [[f64; 24]; 5] = [
    [1.5, 0.8, 0.3, 0.1, 0.0, 0.0, 0.1, 0.3, 0.8, 1.5, 2.5, 3.0, 3.0, 3.0, 3.0, 3.0, 3.5, 4.0, 4.0, 4.0, 3.5, 3.0, 2.5, 2.0],
    [0.6, 0.3, 0.1, 0.0, 0.0, 0.0, 0.2, 1.0, 2.5, 3.5, 3.5, 3.5, 3.0, 3.5, 3.5, 3.5, 3.5, 4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0],
    [0.3, 0.1, 0.0, 0.0, 0.0, 0.1, 0.5, 2.0, 3.5, 4.0, 4.0, 4.0, 3.0, 3.5, 3.5, 3.5, 3.5, 3.5, 3.0, 2.5, 2.0, 1.5, 0.8, 0.4],
    [0.1, 0.0, 0.0, 0.0, 0.0, 0.3, 1.0, 2.5, 4.0, 4.0, 4.0, 3.5, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.2],
    [0.0, 0.0, 0.0, 0.0, 0.2, 1.0, 2.5, 4.0, 4.5, 4.5, 4.0, 3.5, 2.5, 2.0, 2.5, 3.0, 3.0, 3.0, 2.5, 2.0, 1.0, 0.4, 0.1, 0.0],
];

/// Share of calls that are video, per cohort.
pub const VIDEO_SHARE: [f64; 5] = [0.35, 0.30, 0.30, 0.35, 0.55];
/// Share of messages sent in group chats, per cohort (the 55+ live in family groups).
pub const GROUP_SHARE: [f64; 5] = [0.45, 0.40, 0.35, 0.40, 0.55];
/// Share of messages carrying an emoji, per cohort.
pub const EMOJI_SHARE: [f64; 5] = [0.35, 0.30, 0.25, 0.25, 0.30];
/// Median message length in characters, per cohort.
pub const LENGTH_MEDIAN: [f64; 5] = [9.0, 14.0, 18.0, 20.0, 16.0];

/// Each cohort's favourite emoji, most used first; the rest follow the global order.
pub const FAVOURITES: [&[&str]; 5] = [
    &["💀", "😭", "🥺", "✨", "🤡", "🫠", "😂", "🙃"],
    &["😂", "🤣", "😅", "🙃", "❤️", "😭"],
    &["😂", "❤️", "👍", "😊", "😘", "🤣"],
    &["👍", "😊", "❤️", "🙏", "😂", "🌹"],
    &["👍", "🙏", "🌹", "💐", "😊", "👏", "🌞"],
];
/// Zipf exponent of emoji popularity within a cohort.
pub const EMOJI_ZIPF: f64 = 1.15;

pub const CATEGORIES: [&str; 9] = ["transfer", "red_packet", "groceries", "dining", "transport", "utilities", "shopping", "games", "healthcare"];
/// Payment category weights per cohort.
pub const CATEGORY_WEIGHTS: [[f64; 9]; 5] = [
    [10.0, 6.0, 3.0, 20.0, 12.0, 1.0, 18.0, 25.0, 1.0],
    [15.0, 8.0, 10.0, 20.0, 12.0, 5.0, 20.0, 8.0, 2.0],
    [15.0, 10.0, 20.0, 15.0, 10.0, 12.0, 12.0, 3.0, 4.0],
    [15.0, 12.0, 25.0, 10.0, 6.0, 15.0, 8.0, 1.0, 8.0],
    [12.0, 18.0, 28.0, 6.0, 4.0, 14.0, 5.0, 0.5, 13.0],
];
/// Median payment in cents per category (red packets use lucky amounts instead).
pub const CATEGORY_MEDIAN_CENTS: [f64; 9] = [20000.0, 8800.0, 6000.0, 8000.0, 1500.0, 15000.0, 12000.0, 3000.0, 10000.0];
pub const RED_PACKET_CENTS: [i64; 8] = [666, 888, 1888, 2000, 5200, 6666, 8888, 18800];

/// Day-of-week activity multipliers (Mon..Sun) per cohort.
pub const WEEKDAY: [[f64; 7]; 5] = [
    [0.90, 0.90, 0.95, 1.00, 1.15, 1.25, 1.05],
    [0.95, 0.95, 0.95, 1.00, 1.10, 1.15, 1.00],
    [1.00, 1.00, 1.00, 1.00, 1.05, 0.95, 0.95],
    [1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.05],
    [1.00, 1.00, 1.00, 1.00, 1.00, 1.10, 1.20],
];

/// Yearly growth of per-person activity (applied smoothly over time).
pub const YEARLY_GROWTH: f64 = 0.12;

/// Lunar New Year's Eve and Day, 2020–2030.
const LUNAR_NEW_YEAR: [(i32, u32, u32); 11] = [
    (2020, 1, 25),
    (2021, 2, 12),
    (2022, 2, 1),
    (2023, 1, 22),
    (2024, 2, 10),
    (2025, 1, 29),
    (2026, 2, 17),
    (2027, 2, 6),
    (2028, 1, 26),
    (2029, 2, 13),
    (2030, 2, 3),
];

/// True on Lunar New Year's Eve or Day.
pub fn is_lunar_new_year(d: NaiveDate) -> bool {
    LUNAR_NEW_YEAR.iter().any(|&(y, m, day)| {
        let ny = NaiveDate::from_ymd_opt(y, m, day).unwrap();
        d == ny || d.succ_opt() == Some(ny)
    })
}

/// Message-volume multiplier for holidays.
pub fn holiday_factor(d: NaiveDate) -> f64 {
    if is_lunar_new_year(d) {
        return 2.2;
    }
    match (d.month(), d.day()) {
        (1, 1) => 1.6,
        (2, 14) => 1.3,
        (12, 24) => 1.3,
        (12, 25) => 1.4,
        (12, 31) => 1.9,
        _ => 1.0,
    }
}

pub fn weekday_index(d: NaiveDate) -> usize {
    match d.weekday() {
        Weekday::Mon => 0,
        Weekday::Tue => 1,
        Weekday::Wed => 2,
        Weekday::Thu => 3,
        Weekday::Fri => 4,
        Weekday::Sat => 5,
        Weekday::Sun => 6,
    }
}

/// A discrete distribution sampled by binary search on its cumulative weights.
#[derive(Clone, Debug)]
pub struct Discrete {
    cum: Vec<f64>,
}

impl Discrete {
    pub fn new(weights: &[f64]) -> Discrete {
        let mut cum = Vec::with_capacity(weights.len());
        let mut s = 0.0;
        for w in weights {
            s += w.max(0.0);
            cum.push(s);
        }
        assert!(s > 0.0, "a distribution needs some positive weight");
        for c in &mut cum {
            *c /= s;
        }
        Discrete { cum }
    }
    pub fn sample(&self, u: f64) -> usize {
        self.cum.partition_point(|&c| c <= u).min(self.cum.len() - 1)
    }
    pub fn prob(&self, i: usize) -> f64 {
        self.cum[i] - if i == 0 { 0.0 } else { self.cum[i - 1] }
    }
}

/// Per-cohort emoji ranking: favourites first, then the catalogue order.
pub fn cohort_emoji_order(catalog: &[(&'static str, &'static str)], cohort: usize) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::with_capacity(catalog.len());
    for fav in FAVOURITES[cohort] {
        if let Some(i) = catalog.iter().position(|(e, _)| e == fav) {
            order.push(i);
        }
    }
    for i in 0..catalog.len() {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

/// Zipf weights over `n` ranks.
pub fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect()
}
