use super::*;
use crate::privacy::samplers::seeded_rng;

#[test]
fn counts_are_never_negative_and_stay_inside_their_interval() {
    let c = Count::laplace(Sensitivity { l1: 20, l2_sq: 400 }, "0.1".parse().unwrap()).unwrap();
    let mut rng = seeded_rng([3; 32]);
    let mut clipped = 0;
    for _ in 0..2000 {
        let cell = c.release(&mut rng, 5, 0.95);
        assert!(cell.value >= 0.0 && cell.lo >= 0.0);
        assert!(cell.lo <= cell.value && cell.value <= cell.hi, "{cell:?}");
        // never a certain-looking "0 [0, 0]": at least the interval of a released 0
        assert!(cell.hi >= c.halfwidth(0.95), "{cell:?}");
        clipped += (cell.value == 0.0) as u32;
    }
    assert!(clipped > 500, "a count of 5 with scale 200 is often clipped ({clipped})");
    // a count of 0 whose noise drew far below: 0 [0, k]
    let k = c.halfwidth(0.95);
    let cell = clip_at_zero(-10 * k as i128, k as u128, 1.0, 1.0);
    assert_eq!((cell.value, cell.lo, cell.hi), (0.0, 0.0, k));
}

#[test]
fn coverage_of_the_true_count() {
    // 95 % intervals cover the true count with their exact (discrete) coverage
    let c = Count::laplace(Sensitivity { l1: 4, l2_sq: 16 }, "0.5".parse().unwrap()).unwrap();
    let mut rng = seeded_rng([9; 32]);
    let covered = (0..4000).filter(|_| {
        let cell = c.release(&mut rng, 1000, 0.95);
        cell.lo <= 1000.0 && 1000.0 <= cell.hi
    });
    let n = covered.count() as f64;
    // the exact coverage of the discrete interval, and a 5σ band (false failure < 1e-6)
    let p = 1.0 - c.noise.noise.tail(c.noise.halfwidth(0.95));
    assert!(p >= 0.95);
    let sd = (4000.0 * p * (1.0 - p)).sqrt();
    assert!((n - 4000.0 * p).abs() <= 5.0 * sd, "{n} of 4000, expected {}", 4000.0 * p);
}

#[test]
fn cost_is_the_noise_cost() {
    let eps: Amount = "0.25".parse().unwrap();
    let c = Count::laplace(Sensitivity { l1: 3, l2_sq: 9 }, eps).unwrap();
    let r = c.releases();
    assert_eq!(r.len(), 1);
    let Release::Pure { epsilon } = r[0] else { panic!() };
    assert!(epsilon <= eps && epsilon.to_f64() > 0.2499999);
}
