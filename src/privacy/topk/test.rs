use super::*;
use crate::privacy::amount::Amount;
use rand::SeedableRng;

#[test]
fn picks_largest() {
    assert_eq!(top_k(&[3, 9, 1, 9, 5], 3), vec![1, 3, 4]);
    assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
}

#[test]
fn clear_cut_top_k_is_found_with_high_probability() {
    // Zipf-like counts with a clear gap between 5th and 6th
    let counts: Vec<i128> = vec![5000, 4000, 3200, 2600, 2100, 900, 800, 700, 600, 500, 400, 300];
    let noise = Noise::laplace(20, "0.5".parse::<Amount>().unwrap()).unwrap(); // scale 40
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let trials = 500;
    let ok = (0..trials)
        .filter(|_| {
            let noisy: Vec<i128> = counts.iter().map(|c| c + noise.sample(&mut r)).collect();
            let mut got = top_k(&noisy, 5);
            got.sort();
            got == vec![0, 1, 2, 3, 4]
        })
        .count();
    assert_eq!(ok, trials);
    let bound = correct_probability_lower_bound(&noise, 1200, 5, counts.len());
    assert!(bound > 0.999, "{bound}");
}

#[test]
fn bound_is_a_lower_bound() {
    // small gap, noisy: empirical success ≥ the bound
    let noise = Noise::laplace(1, "0.5".parse::<Amount>().unwrap()).unwrap();
    let counts: Vec<i128> = vec![30, 20, 10, 0];
    let mut r = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let trials = 4000;
    let ok = (0..trials)
        .filter(|_| {
            let noisy: Vec<i128> = counts.iter().map(|c| c + noise.sample(&mut r)).collect();
            let mut got = top_k(&noisy, 2);
            got.sort();
            got == vec![0, 1]
        })
        .count() as f64
        / trials as f64;
    let bound = correct_probability_lower_bound(&noise, 10, 2, 4);
    assert!(ok + 0.02 >= bound, "empirical {ok} < bound {bound}");
    assert!(bound > 0.5);
}
