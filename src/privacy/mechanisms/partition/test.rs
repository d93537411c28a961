use super::*;
use crate::privacy::samplers::seeded_rng;

#[test]
fn the_charge_never_exceeds_the_request() {
    for kind in [PartitionSelectionKind::Optimal, PartitionSelectionKind::Laplace] {
        for (e, d, l0) in [("0.5", "1e-6", 4u64), ("1", "1e-8", 1), ("0.3", "3e-7", 7)] {
            let (e, d): (Amount, Amount) = (e.parse().unwrap(), d.parse().unwrap());
            let p = PartitionSelection::new(kind, e, d, l0).unwrap();
            let Release::Approx { epsilon, delta } = p.releases()[0] else { panic!() };
            assert!(epsilon <= e && delta <= d, "{kind:?}: {epsilon} {delta}");
            assert!(epsilon.to_f64() > 0.99 * e.to_f64());
        }
    }
}

#[test]
fn a_delta_too_small_fails_at_construction() {
    let r = PartitionSelection::new(PartitionSelectionKind::Optimal, "1".parse().unwrap(), "1e-18".parse().unwrap(), 4);
    assert!(r.is_err());
}

#[test]
fn absent_keys_are_never_released_and_popular_ones_are() {
    let p = PartitionSelection::new(PartitionSelectionKind::Optimal, "1".parse().unwrap(), "1e-6".parse().unwrap(), 1).unwrap();
    let mut rng = seeded_rng([2; 32]);
    assert!((0..1000).all(|_| !p.keep(&mut rng, 0)));
    assert!((0..1000).all(|_| p.keep(&mut rng, 1000)));
}
