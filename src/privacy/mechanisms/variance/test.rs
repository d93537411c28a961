use super::*;
use crate::privacy::amount::Amount;
use crate::privacy::samplers::seeded_rng;

fn b(s: &str) -> Budget {
    Budget::Laplace(s.parse::<Amount>().unwrap())
}

#[test]
fn wide_integer_bounds_get_a_grid_whose_sensitivities_fit() {
    // [0, 2^33] with the Gaussian: the squared L2 sensitivity of the centred sum of squares
    // (rows₂²·h⁴) wrapped to 0 in u128 before; now the grid is coarsened and the product checked
    let rho = Budget::Gaussian("0.1".parse().unwrap());
    let v = Variance::new(0.0, 2f64.powi(33), true, Sensitivity { l1: 80, l2_sq: 1600 }, [rho, rho, rho], true, false).unwrap();
    assert!(v.squares.sensitivity.l2_sq > 0);
    assert!(v.half <= 1 << 40);
}

#[test]
fn values_and_intervals_are_consistent() {
    let v = Variance::new(0.0, 100.0, true, Sensitivity { l1: 5, l2_sq: 25 }, [b("0.3"), b("0.3"), b("0.3")], true, true).unwrap();
    let mut rng = seeded_rng([5; 32]);
    for n in [0i128, 1, 10, 10_000] {
        let c = v.release(&mut rng, n, 0, n * 100, 0.95);
        assert!(c.lo <= c.value && c.value <= c.hi && c.lo >= 0.0, "{c:?}");
    }
}
