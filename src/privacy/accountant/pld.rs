//! Privacy loss distributions.
//!
//! For a dominating pair (P, Q) the privacy loss L = ln(P(X)/Q(X)), X ~ P, adds
//! up under composition, and δ(ε) = E[(1 − e^{ε − L})₊] (Meiser & Mohammadi 2018;
//! Sommer, Meiser, Mohammadi 2019). The smallest ε with δ(ε) ≤ δ is the tight
//! ε of the composition.

use std::collections::BTreeMap;

use crate::privacy::special::ln_gamma;

fn ln_binom_pmf(n: u64, j: u64, lp: f64, lq: f64) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(j as f64 + 1.0) - ln_gamma((n - j) as f64 + 1.0) + j as f64 * lp + (n - j) as f64 * lq
}

/// Smallest ε in [0, hi] with δ(ε) ≤ target (δ decreasing in ε), rounded up.
fn invert(delta_of: impl Fn(f64) -> f64, target: f64, hi: f64) -> f64 {
    if delta_of(0.0) <= target {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, hi);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if delta_of(mid) <= target { hi = mid } else { lo = mid }
    }
    hi
}

/// Tight ε at δ for the composition of randomised-response pairs with the given
/// ε's — a sound bound for any composition of pure ε-DP mechanisms, exact for
/// discrete Laplace with sensitivity 1. Equal ε's compose exactly (binomial);
/// different ones are combined on a grid with losses rounded **up** (pessimistic).
pub fn rr_pld_epsilon(eps: &[f64], delta: f64) -> Option<f64> {
    if eps.is_empty() || !(delta > 0.0 && delta < 1.0) {
        return None;
    }
    // group equal ε
    let mut groups: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for &e in eps {
        if e > 0.0 {
            groups.entry(e.to_bits()).or_insert((e, 0)).1 += 1;
        }
    }
    if groups.is_empty() {
        return Some(0.0);
    }
    let total: f64 = groups.values().map(|(e, k)| e * *k as f64).sum();
    // each group: losses ε(2j − k) with prob Binom(k, p)(j)
    let group_dist = |e: f64, k: u64| -> Vec<(f64, f64)> {
        let lp = e - (e.exp().ln_1p());
        let lq = -(e.exp().ln_1p());
        (0..=k).map(|j| (e * (2.0 * j as f64 - k as f64), ln_binom_pmf(k, j, lp, lq).exp())).collect()
    };
    let dist: Vec<(f64, f64)> = if groups.len() == 1 {
        let (e, k) = *groups.values().next().unwrap();
        group_dist(e, k)
    } else {
        // pessimistic grid: at most ~2^18 cells over [−total, total]
        let h = (2.0 * total / (1u64 << 18) as f64).max(1e-12);
        let off = (total / h).ceil() as i64 + 1;
        let size = (2 * off + 1) as usize;
        let mut acc = vec![0.0f64; size];
        acc[off as usize] = 1.0;
        for &(e, k) in groups.values() {
            let gd: Vec<(i64, f64)> = group_dist(e, k).into_iter().filter(|(_, p)| *p > 1e-300).map(|(l, p)| ((l / h).ceil() as i64, p)).collect();
            let mut next = vec![0.0f64; size];
            for (i, &v) in acc.iter().enumerate() {
                if v == 0.0 {
                    continue;
                }
                for &(s, p) in &gd {
                    let j = (i as i64 + s).clamp(0, size as i64 - 1) as usize;
                    next[j] += v * p;
                }
            }
            acc = next;
        }
        acc.iter().enumerate().filter(|(_, p)| **p > 0.0).map(|(i, p)| ((i as i64 - off) as f64 * h, *p)).collect()
    };
    let delta_of = |eps: f64| -> f64 { dist.iter().filter(|(l, _)| *l > eps).map(|(l, p)| p * (1.0 - (eps - l).exp())).sum() };
    Some(invert(delta_of, delta, total))
}

/// ε at δ of `k` compositions of the **continuous** Laplace mechanism with scale
/// `b` and sensitivity 1, bracketed: returns (lower, upper) from an optimistic and
/// a pessimistic discretisation with `n` grid cells per unit loss step 1/b.
///
/// Method: each release's loss is +1/b with probability ½, −1/b with probability
/// e^{−1/b}/2, and otherwise continuous on (−1/b, 1/b) with density ∝ e^{l/2}.
/// Conditioning on the number m of continuous parts, the loss is
/// (1/b)·(n₊ − n₋) + T_m, where T_m is the m-fold convolution of the tilted
/// uniform, computed on the grid in O(size) per step with prefix sums.
pub fn laplace_pld_epsilon(b: f64, k: u64, delta: f64, n: usize) -> (f64, f64) {
    let lower = laplace_pld_one(b, k, delta, n, false);
    let upper = laplace_pld_one(b, k, delta, n, true);
    (lower, upper)
}

fn laplace_pld_one(b: f64, k: u64, delta: f64, n: usize, up: bool) -> f64 {
    let a = 1.0 / b;
    let h = a / n as f64;
    let p_plus = 0.5;
    let p_minus = 0.5 * (-a).exp();
    let p_c = 0.5 * (-(-a).exp_m1());
    let (lpc, lpd) = (p_c.ln(), (p_plus + p_minus).ln());
    let pi = p_plus / (p_plus + p_minus);
    let (lpi, lqi) = (pi.ln(), (1.0 - pi).ln());
    // offsets of one continuous part (grid points), weights ∝ r^o
    let (o_min, o_max): (i64, i64) = if up { (-(n as i64) + 1, n as i64) } else { (-(n as i64), n as i64 - 1) };
    let r_ln = h / 2.0;
    let wsum: f64 = (o_min..=o_max).map(|o| (o as f64 * r_ln).exp()).sum();
    // T_m as (offset of index 0, values)
    let mut tms: Vec<(f64, i64, Vec<f64>)> = Vec::new(); // (P(m), offset, dist)
    let mut cur: (i64, Vec<f64>) = (0, vec![1.0]);
    let mut m = 0u64;
    let mode = (k as f64 * p_c).ceil() as u64;
    loop {
        let pm = ln_binom_pmf(k, m, lpc, lpd).exp();
        tms.push((pm, cur.0, cur.1.clone()));
        // past the mode the pmf decreases geometrically: stop once the remaining
        // tail (≤ pm·(k−m)) is negligible next to any δ of interest
        if m == k || (m > mode && pm * ((k - m) as f64) < 1e-22) {
            break;
        }
        // convolve cur with the kernel: g(i) = Σ_o f(i−o) r^o / wsum
        let (off, f) = &cur;
        let new_off = off + o_min;
        let len = f.len() + (o_max - o_min) as usize;
        // prefix sums of f(u) r^{−u} (u = absolute offset), Kahan-compensated
        let mut pre = vec![0.0f64; f.len() + 1];
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for (i, v) in f.iter().enumerate() {
            let u = off + i as i64;
            let y = v * (-(u as f64) * r_ln).exp() - c;
            let t = s + y;
            c = (t - s) - y;
            s = t;
            pre[i + 1] = s;
        }
        let mut g = vec![0.0f64; len];
        for (gi, slot) in g.iter_mut().enumerate() {
            let i = new_off + gi as i64; // absolute offset of output
            // u from i − o_max to i − o_min, clipped to f's range
            let ulo = (i - o_max).max(*off);
            let uhi = (i - o_min).min(off + f.len() as i64 - 1);
            if ulo > uhi {
                continue;
            }
            let sum = pre[(uhi - off + 1) as usize] - pre[(ulo - off) as usize];
            *slot = ((i as f64) * r_ln).exp() * sum / wsum;
        }
        cur = (new_off, g);
        m += 1;
    }
    // suffix sums for each T_m: S0(j) = Σ_{≥j} f, S1(j) = Σ_{≥j} f e^{−t}
    let suffix: Vec<(f64, i64, Vec<f64>, Vec<f64>)> = tms
        .iter()
        .map(|(pm, off, f)| {
            let mut s0 = vec![0.0f64; f.len() + 1];
            let mut s1 = vec![0.0f64; f.len() + 1];
            for i in (0..f.len()).rev() {
                let t = (off + i as i64) as f64 * h;
                s0[i] = s0[i + 1] + f[i];
                s1[i] = s1[i + 1] + f[i] * (-t).exp();
            }
            (*pm, *off, s0, s1)
        })
        .collect();
    let g_m = |(_, off, s0, s1): &(f64, i64, Vec<f64>, Vec<f64>), c: f64| -> f64 {
        // first index with t > c
        let j = ((c / h).floor() as i64 + 1 - off).clamp(0, s0.len() as i64 - 1) as usize;
        (s0[j] - c.exp() * s1[j]).max(0.0)
    };
    let delta_of = |eps: f64| -> f64 {
        let mut total = 0.0;
        for (mi, sm) in suffix.iter().enumerate() {
            let rest = k - mi as u64;
            for n1 in 0..=rest {
                let pj = ln_binom_pmf(rest, n1, lpi, lqi).exp();
                if pj < 1e-300 {
                    continue;
                }
                let j = 2.0 * n1 as f64 - rest as f64;
                total += sm.0 * pj * g_m(sm, eps - a * j);
            }
        }
        total
    };
    invert(delta_of, delta, k as f64 * a)
}
