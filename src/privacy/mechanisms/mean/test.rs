use super::*;
use crate::privacy::amount::Amount;
use crate::privacy::bounding::{Family, GroupPartial, ValueStats, bound_unit};
use crate::privacy::samplers::seeded_rng;

fn budget(s: &str) -> Budget {
    Budget::Laplace(s.parse::<Amount>().unwrap())
}

#[test]
fn laplace_sum_tail_matches_simulation_limits() {
    // equal scales: the closed form of the equal-scale case
    let t = laplace_sum_tail(1.0, 1.0, 0.0);
    assert!((t - 0.5).abs() < 1e-12);
    // a negligible second scale: a single Laplace
    assert!((laplace_sum_tail(2.0, 0.0, 3.0) - 0.5 * (-1.5f64).exp()).abs() < 1e-12);
    // continuity between the general and equal-scale forms
    let a = laplace_sum_tail(1.0, 1.0 - 1e-4, 2.0);
    let b = laplace_sum_tail(1.0, 1.0, 2.0);
    assert!((a - b).abs() < 1e-4, "{a} {b}");
}

/// AVG intervals cover the bounded expectation 95 ± 2 % under subsampling:
/// 400 people, two thirds of them with more rows than the 5 kept (randomised
/// rounding), values spread over [0, 24] with bounds [0, 24]; 2000 releases with
/// fresh bounding randomness each. The bounded expectation is exact:
/// Σ c·k/r and Σ s·k/r over people. (Binomial sd of the coverage at 2000
/// releases is 0.49 %: the ±2 % band is 4σ, false failure < 1e-4.)
#[test]
fn avg_intervals_cover_the_bounded_expectation() {
    let family = Family::L0Linf { max_groups_per_unit: 1, max_rows_per_group: 5 };
    let mean = Mean::new(0.0, 24.0, true, Sensitivity { l1: 5, l2_sq: 25 }, budget("0.5"), budget("0.5")).unwrap();
    let (mid, g) = (mean.mid as i128, mean.grid.size());
    // people: rows 2..=14, values centred e = v − mid with v = (person·7 + j) % 25
    let people: Vec<GroupPartial> = (0..400u64)
        .map(|p| {
            let rows = 2 + p % 13;
            let vals: Vec<i128> = (0..rows).map(|j| ((p * 7 + j) % 25) as i128 - mid).collect();
            GroupPartial {
                group: 0,
                rows,
                values: vec![ValueStats { count: rows, sum: vals.iter().sum(), sum_sq: vals.iter().map(|v| v * v).sum() }],
                bins: vec![],
            }
        })
        .collect();
    let (mut en, mut es) = (0f64, 0f64);
    for p in &people {
        let k = p.rows.min(5) as f64 / p.rows as f64;
        en += p.values[0].count as f64 * k;
        es += p.values[0].sum as f64 * k;
    }
    let truth = (mid as f64 + es / en) * g;
    let mut rng = seeded_rng([21; 32]);
    let runs = 2000;
    let mut covered = 0;
    let mut values = 0.0;
    for _ in 0..runs {
        let (mut n, mut s) = (0i128, 0i128);
        for p in &people {
            for c in bound_unit(&mut rng, std::slice::from_ref(p), family) {
                n += c.values[0].count as i128;
                s += c.values[0].sum;
            }
        }
        let cell = mean.release(&mut rng, n, s, 0.95);
        assert!(cell.lo <= cell.value && cell.value <= cell.hi);
        covered += (cell.lo <= truth && truth <= cell.hi) as u32;
        values += cell.value;
    }
    // and the mean release is within 5 standard errors of the bounded expectation
    let se = (mean.sum.stddev() * mean.grid.size() / en) / (runs as f64).sqrt() * 1.5;
    assert!((values / runs as f64 - truth).abs() <= 5.0 * se, "mean AVG {} vs {truth} (se {se})", values / runs as f64);
    let rate = covered as f64 / runs as f64;
    assert!((0.93..=0.97).contains(&rate), "coverage {rate}");
}

#[test]
fn no_count_means_the_whole_range() {
    let mean = Mean::new(0.0, 10.0, false, Sensitivity { l1: 1, l2_sq: 1 }, budget("1"), budget("1")).unwrap();
    let c = mean.estimate(0, 0, 0.95);
    assert_eq!((c.lo, c.hi), (0.0, 10.0));
}
