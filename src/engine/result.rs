//! The result of a query, as printed and as stored in the ledger (DESIGN §3 JSON).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// f64 fields that may be NaN or ±∞ (JSON has neither): written as `null`,
/// read back as NaN.
pub mod lenient {
    use super::*;
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() { s.serialize_f64(*v) } else { s.serialize_none() }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnMeta {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    /// Carries noise (value, stddev, interval).
    pub noisy: bool,
}

/// A noisy cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Noisy {
    pub value: serde_json::Value,
    #[serde(with = "lenient")]
    pub stddev: f64,
    #[serde(with = "lenient")]
    pub ci_low: f64,
    #[serde(with = "lenient")]
    pub ci_high: f64,
    pub confidence: f64,
}

/// What an answer cost and where it is recorded (exact decimals as strings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Privacy {
    /// ε and δ spent by this call (0 when replayed).
    pub epsilon: String,
    pub delta: String,
    /// ε and δ this answer was charged when first computed.
    pub charged_epsilon: String,
    pub charged_delta: String,
    /// What remains of the dataset's budget, under the governing rule.
    pub remaining_epsilon: String,
    pub remaining_delta: String,
    /// The rule that governs admission ("basic composition" or "zCDP filter").
    pub accountant: String,
    pub entry: Option<i64>,
    pub replayed: bool,
    pub mechanism: String,
    /// The contribution bounds actually applied.
    pub bounding: String,
    pub unit: String,
    /// Hash of the charge entry, and of the stored result (in its result entry).
    pub ledger_hash: Option<String>,
    #[serde(default)]
    pub result_hash: Option<String>,
    #[serde(default)]
    pub analyst: String,
}

/// What contribution bounding removed from an answer, as far as is known.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bias {
    /// `estimated` (a DP estimate released with the answer), `none` (nothing
    /// can be cut: one row per person), or `not_estimated` (fixed bounds).
    pub kind: String,
    /// DP estimate of the share of people whose rows the limits cut, in [0, 1]
    /// (absent when the counts are too noisy to say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_of_people_cut: Option<f64>,
    /// The noisy counts behind it, and their standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people_cut: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_stddev: Option<f64>,
    /// Large enough to change conclusions (more than [`Bias::WARN_SHARE`] of people cut).
    pub warning: bool,
    /// One sentence for people.
    pub text: String,
}

impl Bias {
    /// The share of people cut above which an answer carries a warning.
    pub const WARN_SHARE: f64 = 0.05;
    /// Below this many standard deviations of its counts' noise the people
    /// count leaves the share cut undetermined (its error above ±25 points).
    pub const MIN_PEOPLE_IN_STDDEVS: f64 = 4.0;

    /// `means_only`: every aggregate is a mean, variance or quantile, which
    /// cutting rows re-weights rather than shrinks.
    pub fn estimated(d: &crate::privacy::mechanisms::auto_bounds::Disclosure, bounding: &str, means_only: bool) -> Bias {
        let share = d.share_cut;
        // both counts are noisy: print them as a consistent pair (0 ≤ cut ≤ people)
        let people = d.people.max(0.0);
        let people_cut = d.people_cut.clamp(0.0, people);
        // too few people for the counts' noise: the share says nothing
        if people < Bias::MIN_PEOPLE_IN_STDDEVS * d.count_stddev {
            return Bias {
                kind: "estimated".into(),
                share_of_people_cut: None,
                people_cut: Some(people_cut),
                people: Some(people),
                count_stddev: Some(d.count_stddev),
                warning: !means_only,
                text: format!(
                    "how much bounding ({bounding}) cut could not be estimated at this ε: each of its noisy counts is ±{:.0} people, against about {:.0} people in the query; a larger ε gives a usable estimate",
                    d.count_stddev, people
                ),
            };
        }
        let warning = share > Bias::WARN_SHARE && !means_only;
        let consequence = if means_only {
            "; in means, people with more rows than the limit weigh as if they had the limit: a mean is biased only as far as their values differ from others'"
        } else if warning {
            "; counts and sums are biased low by those people's rows beyond the limit"
        } else {
            ""
        };
        let text = format!(
            "bounding ({bounding}) cut the rows of about {:.1}% of people (DP estimate: {:.0} of {:.0} people, ±{:.0} each){consequence}",
            share * 100.0,
            people_cut,
            people,
            d.count_stddev,
        );
        Bias {
            kind: "estimated".into(),
            share_of_people_cut: Some(share),
            people_cut: Some(people_cut),
            people: Some(people),
            count_stddev: Some(d.count_stddev),
            warning,
            text,
        }
    }

    pub fn none() -> Bias {
        Bias {
            kind: "none".into(),
            share_of_people_cut: Some(0.0),
            people_cut: None,
            people: None,
            count_stddev: None,
            warning: false,
            text: "nothing was cut: by the query's structure every person counts once".into(),
        }
    }

    pub fn not_estimated(bounding: &str) -> Bias {
        Bias {
            kind: "not_estimated".into(),
            share_of_people_cut: None,
            people_cut: None,
            people: None,
            count_stddev: None,
            warning: false,
            text: format!(
                "bias from bounding ({bounding}) was not estimated: fixed limits were given; without them dpq chooses the limits and estimates what they cut"
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<ColumnMeta>,
    /// The contribution bounds actually applied (after any `--auto-bounds` release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounding_used: Option<String>,
    /// The contribution limits applied (for `explain`'s later predictions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<crate::privacy::bounding::Family>,
    /// What bounding each person's contribution removed (every DP answer says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<Bias>,
    /// One object per row keyed by column name; a noisy cell is a [`Noisy`] object.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    pub privacy: Option<Privacy>,
    pub notes: Vec<String>,
}

impl QueryResult {
    /// The value of a cell (noisy cells: their `value`).
    pub fn value(&self, row: usize, col: &str) -> Option<&serde_json::Value> {
        let v = self.rows.get(row)?.get(col)?;
        Some(match v {
            serde_json::Value::Object(o) if o.contains_key("ci_low") => &o["value"],
            other => other,
        })
    }
    pub fn cell(&self, row: usize, col: &str) -> Option<Noisy> {
        serde_json::from_value(self.rows.get(row)?.get(col)?.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::mechanisms::auto_bounds::Disclosure;

    /// The disclosure's two noisy counts print as a consistent pair: never
    /// "3692 of 1229 people" (seen at ε = 0.05) nor a negative count.
    #[test]
    fn the_bias_text_never_shows_more_people_cut_than_people() {
        for (people, cut) in [(1229.0, 3692.0), (1229.0, -40.0), (-3.0, 10.0), (500.0, 100.0)] {
            for sd in [0.5, 2828.0] {
                let d = Disclosure { people, people_cut: cut, share_cut: 1.0, count_stddev: sd };
                let b = Bias::estimated(&d, "L1: ≤ 1 row per person", false);
                let (c, p) = (b.people_cut.unwrap(), b.people.unwrap());
                assert!(0.0 <= c && c <= p, "{c} of {p}");
                if b.share_of_people_cut.is_some() {
                    assert!(b.text.contains(&format!("{c:.0} of {p:.0} people")), "{}", b.text);
                }
            }
        }
    }

    /// Counts too noisy for their people (0 ± 620, seen in a report section
    /// at ε = 0.01) say so, with a warning, instead of "cut 0.0% of people".
    #[test]
    fn a_disclosure_too_noisy_to_read_says_so() {
        let d = Disclosure { people: 0.0, people_cut: 0.0, share_cut: 0.0, count_stddev: 620.0 };
        let b = Bias::estimated(&d, "L1: ≤ 100 rows per person", false);
        assert!(b.share_of_people_cut.is_none() && b.warning, "{b:?}");
        assert!(b.text.contains("could not be estimated at this ε") && b.text.contains("±620"), "{}", b.text);
        let fine = Bias::estimated(&Disclosure { people: 20_000.0, people_cut: 100.0, share_cut: 0.005, count_stddev: 60.0 }, "L1", false);
        assert_eq!(fine.share_of_people_cut, Some(0.005));
        assert!(!fine.warning && fine.text.contains("0.5% of people"), "{}", fine.text);
    }
}
