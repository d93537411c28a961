//! Exact samplers over a cryptographic RNG.
//!
//! Everything here uses integer and rational arithmetic only: no floating point
//! touches a released value's randomness, and there is no `scale * ln(u)`.
//!
//! * [`bernoulli_exp`] — Bernoulli(exp(−γ)) for rational γ ≥ 0 (Canonne, Kamath,
//!   Steinke 2020, *The Discrete Gaussian for Differential Privacy*, Algorithm 1).
//! * [`discrete_laplace`] — P(x) ∝ exp(−|x|·s/t) (CKS20 Algorithm 2).
//! * [`discrete_gaussian`] — P(x) ∝ exp(−x²/(2σ²)) for rational σ² (CKS20 Algorithm 3).
//!
//! Uniform integers come from `rand`'s unbiased range sampling (rejection, no
//! modulo bias); big uniforms use rejection on random bits.
//!
//! **Timing.** The number of loop iterations depends on the value drawn (a larger
//! |noise| takes more iterations of the geometric loop). See `docs/privacy.md` for
//! the measurement and what dpq does about it.

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};
use rand::{CryptoRng, Rng, RngCore};

/// The production RNG: ChaCha20 seeded from the operating system.
pub fn os_rng() -> rand_chacha::ChaCha20Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha20Rng::from_os_rng()
}

/// A ChaCha20 stream from a stored 256-bit secret seed: used to redraw exactly the
/// noise of a charged query (replay after a crash). The seed itself comes from the
/// OS RNG and is kept in the ledger next to the data.
pub fn seeded_rng(seed: [u8; 32]) -> rand_chacha::ChaCha20Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha20Rng::from_seed(seed)
}

/// Fresh 256-bit seed from the OS.
pub fn fresh_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    os_rng().fill_bytes(&mut s);
    s
}

/// Bernoulli(num/den), exact. Requires 0 ≤ num ≤ den, den > 0.
pub fn bernoulli_ratio<R: RngCore + CryptoRng>(rng: &mut R, num: u128, den: u128) -> bool {
    debug_assert!(den > 0 && num <= den);
    rng.random_range(0..den) < num
}

/// Bernoulli(exp(−num/den)) for num/den ≥ 0, exact (CKS20 Algorithm 1).
/// Requires den ≤ 2⁶⁴ so that den·k cannot overflow.
pub fn bernoulli_exp<R: RngCore + CryptoRng>(rng: &mut R, num: u128, den: u128) -> bool {
    assert!(den > 0 && den <= 1u128 << 64, "denominator out of range");
    let whole = num / den;
    let frac = num % den;
    // exp(−γ) = exp(−1)^⌊γ⌋ · exp(−frac)
    let mut i = 0u128;
    while i < whole {
        if !bernoulli_exp_unit(rng, 1, 1) {
            return false;
        }
        i += 1;
    }
    bernoulli_exp_unit(rng, frac, den)
}

/// Bernoulli(exp(−γ)) for γ = num/den ∈ [0, 1].
fn bernoulli_exp_unit<R: RngCore + CryptoRng>(rng: &mut R, num: u128, den: u128) -> bool {
    debug_assert!(num <= den);
    let mut k: u128 = 1;
    loop {
        // A_k ~ Bernoulli(γ / k)
        if !bernoulli_ratio(rng, num, den * k) {
            break;
        }
        k += 1;
    }
    k % 2 == 1
}

/// Uniform big integer in [0, n), n > 0, by rejection on random bits.
pub fn uniform_big<R: RngCore + CryptoRng>(rng: &mut R, n: &BigUint) -> BigUint {
    assert!(!n.is_zero());
    let bits = n.bits();
    let bytes = bits.div_ceil(8) as usize;
    let excess = (bytes as u64 * 8 - bits) as u32;
    let mut buf = vec![0u8; bytes];
    loop {
        rng.fill_bytes(&mut buf);
        if excess > 0 {
            buf[0] &= 0xFFu8 >> excess; // big-endian: mask the top byte
        }
        let x = BigUint::from_bytes_be(&buf);
        if &x < n {
            return x;
        }
    }
}

/// Bernoulli(exp(−num/den)) with big rationals (for the discrete Gaussian).
pub fn bernoulli_exp_big<R: RngCore + CryptoRng>(rng: &mut R, num: &BigUint, den: &BigUint) -> bool {
    assert!(!den.is_zero());
    let (whole, frac) = num.div_rem(den);
    let mut i = BigUint::zero();
    while i < whole {
        if !bernoulli_exp_unit(rng, 1, 1) {
            return false;
        }
        i += 1u32;
    }
    let mut k = BigUint::one();
    loop {
        let d = den * &k;
        if uniform_big(rng, &d) >= frac {
            break;
        }
        k += 1u32;
    }
    (&k % 2u32) == BigUint::one()
}

/// A positive rational scale t/s (both ≤ 2⁶³ after [`Scale::new_at_least`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub t: u128,
    pub s: u128,
}

impl Scale {
    /// A scale ≥ t/s whose numerator and denominator fit the samplers' range:
    /// rounding the noise scale *up* keeps the privacy guarantee.
    /// Panics if t/s itself exceeds 2⁶² (callers choose grids that prevent it).
    pub fn new_at_least(t: u128, s: u128) -> Scale {
        assert!(t > 0 && s > 0, "scale must be positive");
        assert!(t / s <= 1u128 << 62, "noise scale out of range");
        let g = gcd(t, s);
        let (mut t, mut s) = (t / g, s / g);
        let limit = 1u128 << 63;
        while t > limit || s > limit {
            // t/s ≤ ceil(t/2)/floor(s/2); s stays ≥ 2 here because t/s ≤ 2⁶²
            t = t.div_ceil(2);
            s /= 2;
        }
        Scale { t, s }
    }
    pub fn to_f64(self) -> f64 {
        self.t as f64 / self.s as f64
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let r = a % b;
        a = b;
        b = r;
    }
    a
}

/// Discrete Laplace with scale t/s: P(x) = tanh(s/(2t)) · exp(−|x|·s/t), exact
/// (CKS20 Algorithm 2).
pub fn discrete_laplace<R: RngCore + CryptoRng>(rng: &mut R, scale: Scale) -> i128 {
    let Scale { t, s } = scale;
    loop {
        let u = rng.random_range(0..t);
        if !bernoulli_exp(rng, u, t) {
            continue;
        }
        let mut v: u128 = 0;
        while bernoulli_exp(rng, 1, 1) {
            v += 1;
        }
        let x = u + t * v;
        let y = x / s;
        let negative = rng.random::<bool>();
        if negative && y == 0 {
            continue;
        }
        let y = y as i128;
        return if negative { -y } else { y };
    }
}

/// σ² as an exact rational num/den.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variance {
    pub num: BigUint,
    pub den: BigUint,
}

impl Variance {
    /// num/den as f64 (relative error ≤ 2⁻⁵⁰) for any sizes of num and den.
    pub fn to_f64(&self) -> f64 {
        let (mn, en) = big_to_f64(&self.num);
        let (md, ed) = big_to_f64(&self.den);
        (mn / md) * 2f64.powi((en - ed).clamp(-2000, 2000) as i32)
    }
}

/// x = m·2^e with m < 2⁶⁴ exact to 64 bits.
fn big_to_f64(x: &BigUint) -> (f64, i64) {
    let shift = x.bits().saturating_sub(64);
    ((x >> shift).to_f64().unwrap_or(f64::MAX), shift as i64)
}

/// Discrete Gaussian with variance parameter σ² = num/den, exact (CKS20 Algorithm 3).
pub fn discrete_gaussian<R: RngCore + CryptoRng>(rng: &mut R, sigma2: &Variance) -> i128 {
    // t = ⌊σ⌋ + 1, computed exactly: ⌊sqrt(num/den)⌋ = ⌊sqrt(⌊num/den⌋)⌋
    let floor_sigma = (&sigma2.num / &sigma2.den).sqrt();
    let t_big = floor_sigma + 1u32;
    let t = t_big.to_u128().expect("σ within range");
    let scale = Scale::new_at_least(t, 1);
    // γ(y) = (|y|·t·den − num)² / (2·num·t²·den)
    let two_num_t2_den = &sigma2.num * &t_big * &t_big * &sigma2.den * 2u32;
    let t_den = &t_big * &sigma2.den;
    loop {
        let y = discrete_laplace(rng, scale);
        let a = BigUint::from(y.unsigned_abs()) * &t_den;
        let diff = if a >= sigma2.num { &a - &sigma2.num } else { &sigma2.num - &a };
        let num = &diff * &diff;
        if bernoulli_exp_big(rng, &num, &two_num_t2_den) {
            return y;
        }
    }
}

#[cfg(test)]
mod test;
