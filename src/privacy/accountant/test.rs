use super::*;

fn a(s: &str) -> Amount {
    s.parse().unwrap()
}

fn close(x: f64, want: f64, rel: f64) -> bool {
    ((x - want) / want).abs() <= rel
}

#[test]
fn basic_is_exact() {
    let tenth = Release::Pure { epsilon: a("0.1") };
    let rs = vec![tenth.clone(); 10];
    assert_eq!(basic(&rs), (Amount::ONE, Amount::ZERO));
    let three = vec![tenth; 3];
    assert_eq!(basic(&three).0, a("0.3"));
}

// Golden cases (Δ = 1), relative tolerance 1e-6.

#[test]
fn golden_a_10_laplace_b10() {
    let rdp = rdp_to_dp(|al| 10.0 * laplace_rdp(10.0, al), 1e-6);
    assert!(close(rdp, 0.998981, 1e-6), "RDP {rdp}");
    let (lo, hi) = laplace_pld_epsilon(10.0, 10, 1e-6, 2000);
    assert!(lo <= 0.998978 * (1.0 + 1e-6) && hi >= 0.998978 * (1.0 - 1e-6), "PLD bracket [{lo}, {hi}]");
    assert!(close(0.5 * (lo + hi), 0.998978, 1e-6), "PLD {}", 0.5 * (lo + hi));
    let rs = vec![Release::Pure { epsilon: a("0.1") }; 10];
    assert_eq!(totals(&rs, a("1e-6")).basic_epsilon, Amount::ONE);
}

#[test]
fn golden_b_100_laplace_b10() {
    let rs = vec![Release::Pure { epsilon: a("0.1") }; 100];
    let t = totals(&rs, a("1e-6"));
    assert_eq!(t.basic_epsilon, a("10"));
    let z = t.zcdp_epsilon.unwrap();
    assert!(close(z, 5.221534, 1e-6), "zCDP {z}");
    let (lo, hi) = laplace_pld_epsilon(10.0, 100, 1e-6, 2000);
    assert!(lo <= 4.692667 * (1.0 + 1e-6) && hi >= 4.692667 * (1.0 - 1e-6), "PLD bracket [{lo}, {hi}]");
    assert!(close(0.5 * (lo + hi), 4.692667, 1e-6), "PLD {}", 0.5 * (lo + hi));
}

#[test]
fn golden_c_1000_laplace_b100() {
    let rs = vec![Release::Pure { epsilon: a("0.01") }; 1000];
    assert_eq!(basic(&rs).0, a("10"));
    let (lo, hi) = laplace_pld_epsilon(100.0, 1000, 1e-6, 2000);
    assert!(lo <= 1.362925 * (1.0 + 1e-6) && hi >= 1.362925 * (1.0 - 1e-6), "PLD bracket [{lo}, {hi}]");
    assert!(close(0.5 * (lo + hi), 1.362925, 1e-6), "PLD {}", 0.5 * (lo + hi));
}

#[test]
fn golden_d_gaussian_sigma1() {
    let rho = 0.5; // Δ²/(2σ²)
    assert!(close(cks_epsilon(rho, 1e-5), 4.728387, 1e-6));
    let r = rho_for(4.728387, 1e-5);
    assert!(close(r, 0.5, 1e-5), "{r}");
}

#[test]
fn ledger_pld_is_sound_for_discrete_laplace() {
    // For sensitivity 1 the discrete Laplace pair *is* randomised response, so
    // the ledger's PLD must not be below the RR value and must not exceed basic.
    let rs = vec![Release::Pure { epsilon: a("0.1") }; 100];
    let t = totals(&rs, a("1e-6"));
    let pld = t.pld_epsilon.unwrap();
    assert!(pld < 10.0 && pld > 4.692667, "{pld}");
    assert!(t.epsilon <= 10.0);
    // mixed ε: pessimistic grid ≥ exact single-group value for the same total
    let mixed: Vec<Release> = (0..50).flat_map(|_| [Release::Pure { epsilon: a("0.1") }, Release::Pure { epsilon: a("0.2") }]).collect();
    let t = totals(&mixed, a("1e-6"));
    assert!(t.pld_epsilon.unwrap() <= 15.0);
    assert!(t.epsilon <= t.basic_epsilon.to_f64());
}

#[test]
fn approx_releases_add_by_basic_composition() {
    let rs = vec![Release::Approx { epsilon: a("0.5"), delta: a("1e-7") }, Release::Pure { epsilon: a("0.5") }];
    let t = totals(&rs, a("1e-6"));
    assert_eq!(t.basic_delta, a("1e-7"));
    assert!(t.epsilon <= 1.0);
    assert!(t.epsilon >= 0.5);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Accountants are monotone (one more release never lowers the total),
        /// never negative, and never above basic composition.
        #[test]
        fn monotone_nonnegative_bounded(eps in proptest::collection::vec(1u32..2000, 1..12)) {
            let mut rs = Vec::new();
            let mut last = 0.0f64;
            for e in eps {
                rs.push(Release::Pure { epsilon: Amount::from_atto(e as u128 * 1_000_000_000_000_000) });
                let t = totals(&rs, "1e-6".parse().unwrap());
                prop_assert!(t.epsilon >= 0.0);
                prop_assert!(t.epsilon <= t.basic_epsilon.to_f64() + 1e-12);
                prop_assert!(t.epsilon + 1e-9 >= last, "{} < {}", t.epsilon, last);
                last = t.epsilon;
            }
        }
    }
}
