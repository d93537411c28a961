use super::*;
use rand::SeedableRng;

fn a(s: &str) -> Amount {
    s.parse().unwrap()
}

/// The exact probability that a key held by one unit is released is ≤ the δ it
/// is charged (δ/L0 per key, δ over the ≤ L0 keys a unit can create), for
/// several ε, δ, L0 — for both selectors.
#[test]
fn single_unit_release_probability_is_at_most_delta() {
    for e in ["0.1", "0.5", "1", "3"] {
        for d in ["1e-5", "1e-6", "1e-9"] {
            for l0 in [1u64, 4, 24] {
                let charged = a(d).to_f64();
                let opt = Optimal::new(a(e), a(d), l0).unwrap();
                let p = opt.single_unit_release_probability();
                assert!(p * l0 as f64 <= charged, "optimal ε={e} δ={d} L0={l0}: {p} × {l0} > {charged}");
                assert!(p > 0.0);
                let lap = LaplaceThreshold::new(a(e), a(d), l0).unwrap();
                // exact inclusive tail recomputed from the pmf
                let b = lap.noise.scale();
                let alpha = (-1.0 / b).exp();
                let norm = (1.0 - alpha) / (1.0 + alpha);
                let m = lap.threshold - 1;
                let tail: f64 = (0..100_000).map(|j| norm * alpha.powf((m + j) as f64)).sum();
                assert!(tail * l0 as f64 <= charged * (1.0 + 1e-9), "laplace ε={e} δ={d} L0={l0}: {tail}");
                assert!((tail - lap.single_unit_release_probability()).abs() <= 1e-12 * tail.max(1e-300) + 1e-300);
            }
        }
    }
}

/// The optimal π satisfies the (ε, δ) constraints between neighbouring counts.
#[test]
fn optimal_recursion_respects_dp_constraints() {
    let opt = Optimal::new(a("1"), a("1e-6"), 1).unwrap();
    let (e, d) = opt.per_key();
    for n in 1..200u64 {
        let (p0, p1) = (opt.probability(n - 1), opt.probability(n));
        assert!(p1 <= e.exp() * p0 + d + 1e-15, "n={n}");
        assert!(1.0 - p0 <= e.exp() * (1.0 - p1) + d + 1e-15, "n={n}");
        assert!(p1 >= p0);
    }
    assert_eq!(opt.probability(100_000), 1.0);
}

#[test]
fn popular_keys_are_kept_and_rare_ones_dropped() {
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let opt = Optimal::new(a("1"), a("1e-6"), 1).unwrap();
    assert!((0..1000).all(|_| opt.keep(&mut r, 60)));
    assert!((0..1000).all(|_| !opt.keep(&mut r, 1)));
    let lap = LaplaceThreshold::new(a("1"), a("1e-6"), 1).unwrap();
    assert!((0..1000).filter(|_| lap.keep(&mut r, 60)).count() > 990);
    // the optimal mechanism needs fewer units than thresholding
    assert!(opt.n_for_half() <= lap.n_for_half());
}

#[test]
fn delta_zero_is_refused_with_a_way_out() {
    let e = Optimal::new(a("1"), Amount::ZERO, 1).unwrap_err();
    assert!(e.to_string().contains("--delta"));
}

/// The probabilities the optimal selector samples satisfy the DVGM22
/// constraints exactly — checked in rational arithmetic with a Taylor lower
/// bound L ≤ e^ε and 1/L ≥ e^{−ε}:
/// π(n) ≤ e^ε·π(n−1) + δ and π(n) ≤ 1 − e^{−ε}(1 − π(n−1) − δ), π non-decreasing.
#[test]
fn optimal_probabilities_satisfy_the_recurrence_exactly() {
    use num_bigint::{BigInt, BigUint};
    let s18 = BigUint::from(crate::privacy::amount::SCALE);
    let two64 = BigUint::from(1u128 << 64);
    for e in ["0.1", "1", "3"] {
        for d in ["1e-5", "1e-9"] {
            for l0 in [1u64, 4] {
                let opt = Optimal::new(a(e), a(d), l0).unwrap();
                let (eatto, datto) = (BigUint::from(opt.epsilon_key.atto()), BigUint::from(opt.delta_key_exact.atto()));
                // L = Σ_{i≤T} ε^i / i!  with ε = eatto / 10^18
                let t = 40u32;
                let mut fact = vec![BigUint::from(1u32)];
                for i in 1..=t {
                    let f = &fact[i as usize - 1] * BigUint::from(i);
                    fact.push(f);
                }
                let lden = s18.pow(t) * &fact[t as usize];
                let mut lnum = BigUint::from(0u32);
                for i in 0..=t {
                    lnum += eatto.pow(i) * s18.pow(t - i) * (&fact[t as usize] / &fact[i as usize]);
                }
                let k = opt.numerators();
                assert_eq!(k[0], 0);
                for n in 1..k.len() {
                    let (kn, kp) = (BigUint::from(k[n]), BigUint::from(k[n - 1]));
                    assert!(kn >= kp, "not monotone at {n}");
                    // (a) kn·Lden·10^18 ≤ Lnum·kp·10^18 + datto·2^64·Lden
                    assert!(&kn * &lden * &s18 <= &lnum * &kp * &s18 + &datto * &two64 * &lden, "ε={e} δ={d} L0={l0}: (a) fails at n={n}");
                    // (c) kn·Lnum·10^18 ≤ 2^64·Lnum·10^18 − Rnum·Lden, Rnum = 2^64·10^18 − kp·10^18 − datto·2^64
                    let rnum = BigInt::from(&two64 * &s18) - BigInt::from(&kp * &s18) - BigInt::from(&datto * &two64);
                    if rnum > BigInt::from(0) {
                        let lhs = BigInt::from(&kn * &lnum * &s18);
                        let rhs = BigInt::from(&two64 * &lnum * &s18) - rnum * BigInt::from(lden.clone());
                        assert!(lhs <= rhs, "ε={e} δ={d} L0={l0}: (c) fails at n={n}");
                    }
                }
            }
        }
    }
}
