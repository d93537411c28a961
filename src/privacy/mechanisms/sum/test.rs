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
