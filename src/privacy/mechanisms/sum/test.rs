use super::*;
use crate::privacy::amount::Amount;
use crate::privacy::samplers::seeded_rng;

fn eps(s: &str) -> Budget {
    Budget::Laplace(s.parse::<Amount>().unwrap())
}

#[test]
fn sensitivity_is_rows_times_the_widest_bound_in_grid_units() {
    let s = Sum::new(0.0, 2000.0, true, Sensitivity { l1: 20, l2_sq: 400 }, eps("0.5")).unwrap();
    assert_eq!(s.grid, Grid::UNIT);
    assert_eq!(s.per_row, 2000);
    assert_eq!(s.noise.sensitivity.l1, 40_000);
    assert!(s.admits(20, 40_000) && !s.admits(20, 40_001));
}

#[test]
fn wide_bounds_are_refused_not_wrapped() {
    // 2^64-sized values with 2^70 rows per person: the product does not fit
    let r = Sum::new(0.0, 2f64.powi(60), true, Sensitivity { l1: 1 << 70, l2_sq: 1 << 100 }, eps("1"));
    assert!(matches!(r, Err(MechanismError::Overflow { .. }) | Err(MechanismError::Noise(_))), "{r:?}");
    // and a wide but workable range gets a coarser grid instead of an error
    let s = Sum::new(-1e300, 1e300, false, Sensitivity { l1: 100, l2_sq: 10_000 }, eps("0.01")).unwrap();
    assert!(s.noise.noise.scale() <= 2f64.powi(56), "{}", s.noise.noise.scale());
}

#[test]
fn non_negative_sums_stay_non_negative() {
    let s = Sum::new(0.0, 100.0, false, Sensitivity { l1: 10, l2_sq: 100 }, eps("0.1")).unwrap();
    let mut rng = seeded_rng([1; 32]);
    for _ in 0..500 {
        let c = s.release(&mut rng, 0, 0.95);
        assert!(c.value >= 0.0 && c.lo >= 0.0 && c.lo <= c.value && c.value <= c.hi);
    }
}

/// SUM over subsampled people is unbiased: 300 people with up to 40 rows, 10
/// kept per person (randomised rounding), fresh bounding in each of 3000
/// releases; the mean release is within 5 standard errors of the bounded
/// expectation Σ s·k/r (false failure < 1e-6). With truncation toward zero
/// (before 2026-11-29) the mean sat ~0.5 per subsampled person below it.
#[test]
fn sums_over_subsampled_people_are_unbiased() {
    use crate::privacy::bounding::{Family, GroupPartial, ValueStats, bound_unit};
    let family = Family::L0Linf { max_groups_per_unit: 1, max_rows_per_group: 10 };
    let s = Sum::new(0.0, 1.0, true, Sensitivity { l1: 10, l2_sq: 100 }, eps("2")).unwrap();
    let people: Vec<GroupPartial> = (0..300u64)
        .map(|p| {
            let rows = 5 + p % 36;
            let ones = (p * 7) % (rows + 1); // a 0/1 column: the bias was as large as the quantity
            GroupPartial { group: 0, rows, values: vec![ValueStats { count: rows, sum: ones as i128, sum_sq: ones as i128 }], bins: vec![] }
        })
        .collect();
    let expect: f64 = people.iter().map(|p| p.values[0].sum as f64 * p.rows.min(10) as f64 / p.rows as f64).sum();
    let mut rng = seeded_rng([33; 32]);
    let runs = 3000;
    let mut total = 0.0;
    for _ in 0..runs {
        let mut sum = 0i128;
        for p in &people {
            for c in bound_unit(&mut rng, std::slice::from_ref(p), family) {
                sum += c.values[0].sum;
            }
        }
        // the raw noisy sum (no clipping: unbiasedness is about the mechanism before post-processing)
        total += s.noise.sample(&mut rng, sum) as f64;
    }
    let mean = total / runs as f64;
    // noise sd (b = 5: √50) and the rounding's Bernoulli per person (≤ ½ each)
    let se = ((s.noise.stddev().powi(2) + 300.0 * 0.25) / runs as f64).sqrt();
    assert!((mean - expect).abs() <= 5.0 * se, "mean {mean} vs bounded expectation {expect} (se {se})");
}
