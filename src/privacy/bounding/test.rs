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
