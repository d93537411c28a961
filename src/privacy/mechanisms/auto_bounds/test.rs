use super::*;
use crate::privacy::samplers::seeded_rng;

fn fixed() -> Limits {
    Limits { max_rows_per_unit: 100, max_groups_per_unit: 4, max_rows_per_group: 20 }
}

#[test]
fn cost_is_what_the_picks_and_counts_use() {
    let eps: Amount = "0.1".parse().unwrap();
    let cost = |a: &AutoBounds| match a.releases()[0] {
        Release::Pure { epsilon } => epsilon,
        _ => panic!(),
    };
    for a in [
        AutoBounds::new(eps, Choose::RowsPerUnit, None, 5),
        AutoBounds::new(eps, Choose::RowsPerUnit, Some(24), 5),
        AutoBounds::new(eps, Choose::GroupsAndRows, Some(24), 5),
        AutoBounds::new(eps, Choose::GroupsAndRows, None, 5),
        AutoBounds::new(eps, Choose::Groups, Some(24), 5),
    ] {
        assert_eq!(cost(&a), eps, "{a:?}: the charge is the share given");
        let used = a.epsilon_each.mul_ratio_floor(if a.choose == Choose::GroupsAndRows && a.groups.is_some() { 2 } else { 1 }, 1)
            + a.epsilon_disclose.mul_ratio_floor(2, 1);
        assert!(used <= eps && used > eps.mul_ratio_floor(99, 100), "{a:?}: the picks and counts spend the share, never more");
    }
}

/// Heavy-tailed rows per person: the limit lands where about `target` people
/// (give or take the pick's rank error) contribute more, plus the headroom bin;
/// the disclosed share of people cut matches the truth within the noise.
#[test]
fn the_row_limit_follows_the_target_and_the_cut_is_disclosed() {
    use rand::Rng;
    let mut r = seeded_rng([9; 32]);
    // 20 000 people, log-uniform rows over 2^2..2^14
    let shapes: Vec<UnitShape> = (0..20_000)
        .map(|_| {
            let rows = 2f64.powf(r.random_range(2.0..14.0)) as u64;
            UnitShape { rows, groups: 1, max_rows_in_group: rows }
        })
        .collect();
    let mut sorted: Vec<u64> = shapes.iter().map(|s| s.rows).collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let target = 50u64;
    let hist = shape_histogram(&shapes);
    let a = AutoBounds::new("1".parse().unwrap(), Choose::RowsPerUnit, None, target);
    let runs = 60;
    let mut off_the_top = 0;
    for _ in 0..runs {
        let l = a.choose(&hist, fixed(), shapes.len() as f64, &mut r).unwrap();
        let c = l.max_rows_per_unit;
        let above = sorted.iter().filter(|&&x| x > c).count();
        let people = a.noisy_people(&hist, &mut r).unwrap();
        assert!(a.informative(people), "20 000 people at ε = 1 are enough to choose");
        let d = a.disclose(people, above as u64, &mut r).unwrap();
        // the pick's rank error at ε = 0.4 is a few dozen people; the headroom bin halves what is cut
        assert!(above <= 400, "C = {c} cuts {above} people");
        // the data ends in bin 13 (≤ 16 383): the pick is bin 13 or above, plus the headroom
        if c > 32_767 {
            off_the_top += 1;
        }
        assert!(c <= 131_071, "C = {c}: three bins above the data");
        let truth = above as f64 / shapes.len() as f64;
        assert!((d.share_cut - truth).abs() < 0.01, "disclosed {} vs {truth}", d.share_cut);
        assert_eq!(l.max_groups_per_unit, 4, "a limit not chosen keeps its fixed value");
    }
    // the tied empty bins above the data hold ≈ 13.5 % of the pick's mass under the e^(−2k) prior
    assert!(off_the_top <= runs * 3 / 10, "{off_the_top}/{runs} picks above the data");
}

#[test]
fn group_limits_respect_the_domain_cap() {
    let shapes: Vec<UnitShape> = (0..5000u64).map(|i| UnitShape { rows: 100 + i % 100, groups: 1 + i % 24, max_rows_in_group: 10 + i % 20 }).collect();
    let a = AutoBounds::new("3".parse().unwrap(), Choose::GroupsAndRows, Some(24), 100);
    let l = a.choose(&shape_histogram(&shapes), fixed(), shapes.len() as f64, &mut seeded_rng([4; 32])).unwrap();
    assert!(l.max_groups_per_unit <= 24);
    assert!((15..=63).contains(&l.max_rows_per_group), "{l:?}");
}

/// Below [`MIN_RESOLUTIONS`] resolutions of people the pick is arbitrary: the
/// engine then keeps the fixed limits. 150 people at a report section's ε are
/// far below; 20 000 at ε = 1 far above; the threshold moves as 1/ε.
#[test]
fn small_queries_are_not_informative() {
    let eps = |e: &str| AutoBounds::new(e.parse().unwrap(), Choose::RowsPerUnit, None, 50);
    let (small, large) = (eps("0.0228"), eps("1"));
    assert!(!small.informative(150.0));
    assert!(large.informative(20_000.0));
    assert!((small.resolution() / large.resolution() - 1.0 / 0.0228).abs() < 0.5, "{} {}", small.resolution(), large.resolution());
    // MovieLens' 943 people at ε = 1 with a 5 % share: informative
    assert!(eps("0.05").informative(943.0), "{}", eps("0.05").resolution());
}
