use super::*;
use proptest::prelude::*;
use rand::SeedableRng;

fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

fn partial(group: u32, rows: u64, sum: i128) -> GroupPartial {
    GroupPartial { group, rows, values: vec![ValueStats { count: rows, sum, sum_sq: 0 }], bins: vec![] }
}

#[test]
fn l0_choice_is_uniform_not_first_by_key() {
    let mut r = rng(1);
    let parts: Vec<GroupPartial> = (0..10).map(|g| partial(g, 1, 1)).collect();
    let mut hits = [0u32; 10];
    for _ in 0..20_000 {
        for c in bound_unit(&mut r, &parts, Family::L0Linf { max_groups_per_unit: 2, max_rows_per_group: 5 }) {
            hits[c.group as usize] += 1;
        }
    }
    // each group kept with probability 2/10 → 4000 ± ~4.5σ
    for h in hits {
        assert!((h as f64 - 4000.0).abs() < 300.0, "{hits:?}");
    }
}

#[test]
fn hypergeometric_matches_expectation() {
    let mut r = rng(2);
    let sizes = [50u64, 30, 20];
    let mut tot = [0u64; 3];
    for _ in 0..5000 {
        let d = hypergeometric(&mut r, &sizes, 10);
        assert_eq!(d.iter().sum::<u64>(), 10);
        for i in 0..3 {
            assert!(d[i] <= sizes[i]);
            tot[i] += d[i];
        }
    }
    assert!((tot[0] as f64 / 5000.0 - 5.0).abs() < 0.15);
    assert!((tot[2] as f64 / 5000.0 - 2.0).abs() < 0.1);
}

proptest! {
    /// Whatever a unit holds, its bounded contributions respect the declared
    /// bounds: ≤ L0 groups, ≤ Linf rows per group, sums within [kept·lo, kept·hi];
    /// under L1 ≤ C rows in total.
    #[test]
    fn bounding_really_bounds(
        groups in proptest::collection::vec((1u64..5000, 0i64..2000), 1..40),
        l0 in 1u64..6, linf in 1u64..50, c in 1u64..200, seed in 0u64..1000,
    ) {
        let mut r = rng(seed);
        let parts: Vec<GroupPartial> = groups.iter().enumerate()
            .map(|(g, &(rows, v))| partial(g as u32, rows, rows as i128 * v as i128))
            .collect();
        let out = bound_unit(&mut r, &parts, Family::L0Linf { max_groups_per_unit: l0, max_rows_per_group: linf });
        prop_assert!(out.len() as u64 <= l0);
        for cn in &out {
            prop_assert!(cn.rows <= linf);
            prop_assert!(cn.values[0].count <= cn.rows);
            prop_assert!(cn.values[0].sum >= 0 && cn.values[0].sum <= cn.values[0].count as i128 * 2000);
        }
        let out = bound_unit(&mut r, &parts, Family::L1 { max_rows_per_unit: c });
        prop_assert!(out.iter().map(|x| x.rows).sum::<u64>() <= c);
        for cn in &out {
            prop_assert!(cn.values[0].sum <= cn.rows as i128 * 2000);
        }
    }

    #[test]
    fn sample_indices_are_distinct_and_in_range(n in 1u64..500, k in 0u64..500, seed in 0u64..100) {
        let k = k.min(n);
        let s = sample_indices(&mut rng(seed), n, k);
        prop_assert_eq!(s.len() as u64, k);
        prop_assert!(s.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(s.iter().all(|&i| i < n));
    }
}

#[test]
fn log2_bins() {
    assert_eq!(log2_bin(1), 0);
    assert_eq!(log2_bin(3), 1);
    assert_eq!(log2_bin(4), 2);
    assert_eq!(log2_bin_upper(2), 7);
}

#[test]
fn randomised_rounding_is_exact_in_expectation_and_stays_in_range() {
    let mut r = rng(11);
    for (x, k, n) in [(7i128, 3u64, 10u64), (-7, 3, 10), (1_000_001, 20, 37), (-5, 1, 2), (i128::MAX / 3, 5, 7)] {
        let exact = x as f64 * k as f64 / n as f64;
        let trials = 20_000;
        let mut sum = 0f64;
        for _ in 0..trials {
            let v = randomised_round(&mut r, x, k, n);
            // within one of the exact rational, never beyond the integer bound |x|·k/n rounded up
            assert!((v as f64 - exact).abs() <= 1.0 + exact.abs() * 1e-15, "{x}·{k}/{n} → {v}");
            sum += v as f64 - exact.floor();
        }
        let mean = sum / trials as f64 + exact.floor();
        // the fractional part's Bernoulli: sd ≤ 0.5/√trials, 6σ band
        assert!((mean - exact).abs() <= 6.0 * 0.5 / (trials as f64).sqrt() + exact.abs() * 1e-15, "{x}·{k}/{n}: mean {mean} vs {exact}");
    }
}

/// The audit's reproduction: bounds [1000, 1001] (centred at 1000, h = 1), one
/// row kept per person, a person with rows {1000, 1001}. Their centred sum of
/// squares is 1; scaled to one row it must stay within h² = 1 (it was 1000
/// with scale-then-centre).
#[test]
fn centred_statistics_stay_within_their_range_when_subsampled() {
    let mut r = rng(12);
    let family = Family::L0Linf { max_groups_per_unit: 1, max_rows_per_group: 1 };
    let limits = [ValueLimit { abs: 1, sq: Some(1) }];
    let p = GroupPartial { group: 0, rows: 2, values: vec![ValueStats { count: 2, sum: 1, sum_sq: 1 }], bins: vec![] };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let c = bound_unit(&mut r, std::slice::from_ref(&p), family);
        check(&c, family, &limits).unwrap();
        seen.insert((c[0].values[0].sum, c[0].values[0].sum_sq));
    }
    assert!(seen.iter().all(|&(s, q)| (0..=1).contains(&s) && (0..=1).contains(&q)), "{seen:?}");
    // a contribution outside the range is refused
    let bad = vec![Contribution { group: 0, rows: 1, values: vec![ValueStats { count: 1, sum: 2, sum_sq: 4 }], bins: vec![] }];
    assert!(check(&bad, family, &limits).is_err());
}

proptest! {
    /// Every bounded contribution lies in its calibrated range, for random
    /// people, families and value ranges.
    #[test]
    fn every_contribution_lies_within_its_calibrated_range(
        groups in proptest::collection::vec((1u64..200, 0u64..=100, -1000i64..=1000, any::<u64>()), 1..12),
        l0 in 1u64..5, linf in 1u64..30, c in 1u64..60, l1 in any::<bool>(), h in 1u128..2000, seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let parts: Vec<GroupPartial> = groups.iter().enumerate().map(|(g, &(rows, nn_pct, mean, spread))| {
            let count = rows * nn_pct / 100;
            // values within [-h, h]: a sum and sum of squares consistent with count values
            let v = (mean as i128).clamp(-(h as i128), h as i128);
            let v2 = (v * v) as u128;
            let sq = (v2 + spread as u128 % (h * h - v2 + 1)) as i128;
            GroupPartial { group: g as u32, rows, values: vec![ValueStats { count, sum: v * count as i128, sum_sq: sq * count as i128 }], bins: vec![] }
        }).collect();
        let family = if l1 { Family::L1 { max_rows_per_unit: c } } else { Family::L0Linf { max_groups_per_unit: l0, max_rows_per_group: linf } };
        let out = bound_unit(&mut r, &parts, family);
        prop_assert!(check(&out, family, &[ValueLimit { abs: h, sq: Some(h * h) }]).is_ok(), "{out:?}");
    }
}
