use super::*;
use proptest::prelude::*;

#[test]
fn integer_columns_stay_on_the_unit_grid() {
    let g = Grid::choose(0.0, 2000.0, 160.0 * 2000.0, true).unwrap();
    assert_eq!(g.exp, 0);
    assert_eq!(g.encode(17.0, 0.0, 2000.0).unwrap(), 17);
    assert_eq!(g.row_sensitivity(0.0, 2000.0), 2000);
}

#[test]
fn nan_is_rejected_before_clamping() {
    assert_eq!(Grid::UNIT.encode(f64::NAN, 0.0, 1.0), Err(FixedPointError::NotFinite));
    assert_eq!(Grid::UNIT.encode(f64::INFINITY, 0.0, 1.0), Err(FixedPointError::NotFinite));
}

#[test]
fn huge_bounds_keep_52_bits() {
    let g = Grid::choose(-1e30, 1e30, 1.0, false).unwrap();
    assert!(1e30 / g.size() <= MAX_UNITS);
}

proptest! {
    #[test]
    fn clamping_stays_in_bounds(v in -1e12f64..1e12, lo in -1e6f64..0.0, w in 0.0f64..1e6, scale in 1e-3f64..1e9) {
        let hi = lo + w;
        let g = Grid::choose(lo, hi, scale, false).unwrap();
        let n = g.encode(v, lo, hi).unwrap();
        let (elo, ehi) = g.encode_bounds(lo, hi);
        prop_assert!(n >= elo && n <= ehi);
        prop_assert!((n.unsigned_abs() as u128) <= g.row_sensitivity(lo, hi));
        // decoded value within half a grid step of the clamped value
        prop_assert!((g.decode(n as i128) - v.clamp(lo, hi)).abs() <= g.size() / 2.0 + 1e-9 * w.max(1.0));
    }

    #[test]
    fn fixed_point_round_trips_grid_values(n in -(1i64 << 50)..(1i64 << 50), exp in -20i32..20) {
        let g = Grid { exp };
        let v = g.decode(n as i128);
        prop_assert_eq!(g.encode(v, f64::MIN, f64::MAX).unwrap(), n);
    }

    #[test]
    fn i128_sums_are_exact(vals in proptest::collection::vec(-(1i64 << 52)..(1i64 << 52), 0..200)) {
        let s: i128 = vals.iter().map(|&v| v as i128).sum();
        let s2: i128 = vals.iter().rev().map(|&v| v as i128).sum();
        prop_assert_eq!(s, s2);
    }
}
