use super::*;
use crate::privacy::samplers::seeded_rng;

#[test]
fn cost_is_what_the_picks_use() {
    let eps: Amount = "0.1".parse().unwrap();
    let global = AutoBounds::new(eps, None);
    let grouped = AutoBounds::new(eps, Some(24));
    let cost = |a: &AutoBounds| match a.releases()[0] {
        Release::Pure { epsilon } => epsilon,
        _ => panic!(),
    };
    assert!(cost(&grouped) <= eps && cost(&global) < cost(&grouped));
}

#[test]
fn limits_follow_the_contributions_and_respect_the_domain_cap() {
    // 5 000 people with 100–200 rows over ≤ 24 hour groups
    let shapes: Vec<UnitShape> = (0..5000u64).map(|i| UnitShape { rows: 100 + i % 100, groups: 1 + i % 24, max_rows_in_group: 10 + i % 20 }).collect();
    let a = AutoBounds::new("3".parse().unwrap(), Some(24));
    let l = a.choose(&shapes, &mut seeded_rng([4; 32])).unwrap();
    assert!((127..=511).contains(&l.max_rows_per_unit), "{l:?}");
    assert!(l.max_groups_per_unit <= 24);
    assert!((15..=63).contains(&l.max_rows_per_group), "{l:?}");
}
