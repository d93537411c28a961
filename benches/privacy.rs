//! Micro-benchmarks of the privacy core: samplers (and how their time depends on
//! the size of the noise drawn), fixed-point sums, partition selection, the
//! accountants. Run: `cargo bench --bench privacy`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use dpq::privacy::accountant::{Release, totals};
use dpq::privacy::amount::Amount;
use dpq::privacy::fixed_point::Grid;
use dpq::privacy::noise::Noise;
use dpq::privacy::partition::{LaplaceThreshold, Optimal, Selector};
use dpq::privacy::samplers::{Scale, Variance, bernoulli_exp, discrete_gaussian, discrete_laplace};
use num_bigint::BigUint;
use rand::SeedableRng;

fn rng() -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(1)
}

fn samplers(c: &mut Criterion) {
    let mut r = rng();
    c.bench_function("bernoulli_exp(1/3)", |b| b.iter(|| bernoulli_exp(&mut r, black_box(1), black_box(3))));
    for (t, s) in [(1u128, 1u128), (160, 1), (1_000_000, 1)] {
        let scale = Scale::new_at_least(t, s);
        c.bench_function(&format!("discrete_laplace(scale {t})"), |b| b.iter(|| discrete_laplace(&mut r, black_box(scale))));
    }
    for s2 in [1u64, 1_000_000] {
        let v = Variance { num: BigUint::from(s2), den: BigUint::from(1u32) };
        c.bench_function(&format!("discrete_gaussian(σ²={s2})"), |b| b.iter(|| discrete_gaussian(&mut r, black_box(&v))));
    }
}

/// Timing against |noise|: draw many samples, bucket by |z|/b, report the mean
/// time per bucket (printed; this is the side channel discussed in docs/privacy.md).
fn timing_vs_noise(_c: &mut Criterion) {
    let mut r = rng();
    let b = 160.0;
    let scale = Scale::new_at_least(160, 1);
    let mut buckets = [(0u64, 0f64); 8];
    for _ in 0..200_000 {
        let t0 = Instant::now();
        let z = discrete_laplace(&mut r, scale);
        let ns = t0.elapsed().as_nanos() as f64;
        let k = ((z.unsigned_abs() as f64 / b) as usize).min(7);
        buckets[k].0 += 1;
        buckets[k].1 += ns;
    }
    println!("discrete Laplace (scale 160): mean ns per draw by |noise|/scale bucket");
    for (k, (n, total)) in buckets.iter().enumerate() {
        if *n > 0 {
            println!("  |z|/b in [{k}, {}): {:>8} draws, {:>7.0} ns", k + 1, n, total / *n as f64);
        }
    }
}

fn fixed_point(c: &mut Criterion) {
    let g = Grid::choose(0.0, 2000.0, 160.0, false).unwrap();
    let vals: Vec<f64> = (0..1_000_000).map(|i| (i % 3000) as f64 * 0.7).collect();
    c.bench_function("encode+sum 1M values (i128)", |b| {
        b.iter(|| {
            let s: i128 = vals.iter().map(|&v| g.encode(v, 0.0, 2000.0).unwrap() as i128).sum();
            black_box(s)
        })
    });
}

fn partition(c: &mut Criterion) {
    let e: Amount = "1".parse().unwrap();
    let d: Amount = "1e-6".parse().unwrap();
    c.bench_function("optimal partition selection: build", |b| b.iter(|| Optimal::new(black_box(e), d, 4).unwrap()));
    let opt = Optimal::new(e, d, 4).unwrap();
    let lap = LaplaceThreshold::new(e, d, 4).unwrap();
    let mut r = rng();
    c.bench_function("optimal partition selection: keep", |b| b.iter(|| opt.keep(&mut r, black_box(37))));
    c.bench_function("laplace threshold: keep", |b| b.iter(|| lap.keep(&mut r, black_box(37))));
}

fn accountant(c: &mut Criterion) {
    let rs: Vec<Release> = (0..100).map(|i| Release::Pure { epsilon: Amount::from_atto(50_000_000_000_000_000 + (i % 3) * 10_000_000_000_000_000) }).collect();
    let d: Amount = "1e-6".parse().unwrap();
    c.bench_function("totals over 100 releases (basic+zCDP+RDP+PLD)", |b| b.iter(|| totals(black_box(&rs), d)));
    let n = Noise::laplace(80, "0.5".parse().unwrap()).unwrap();
    c.bench_function("laplace CI half-width", |b| b.iter(|| black_box(&n).halfwidth(0.95)));
}

criterion_group!(benches, samplers, timing_vs_noise, fixed_point, partition, accountant);
criterion_main!(benches);
