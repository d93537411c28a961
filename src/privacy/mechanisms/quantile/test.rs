use super::*;
use crate::privacy::samplers::seeded_rng;

#[test]
fn the_cost_is_the_parts_used_times_the_groups_a_person_touches() {
    let eps: Amount = "0.5".parse().unwrap();
    let d = Domain::new(0.0, 100.0, true).unwrap();
    let q = Quantile::new(d, 0.5, eps, 3, 4);
    let Release::Pure { epsilon } = q.releases()[0] else { panic!() };
    assert!(epsilon <= eps && epsilon.to_f64() > 0.4999, "{epsilon}");
}

#[test]
fn median_of_a_clear_histogram() {
    let d = Domain::new(0.0, 9.0, true).unwrap();
    let q = Quantile::new(d, 0.5, "5".parse().unwrap(), 1, 1);
    let mut hist = vec![0u64; 10];
    hist[7] = 10_000;
    let c = q.release(&mut seeded_rng([1; 32]), &hist, 0.95).unwrap();
    assert_eq!(c.value, 7.0);
    assert!(c.lo <= 7.0 && c.hi >= 7.0);
}
