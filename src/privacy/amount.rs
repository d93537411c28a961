//! Exact privacy amounts.
//!
//! ε and δ are stored as integer multiples of 10⁻¹⁸ ("atto" units) in a `u128`, so
//! that budget arithmetic is exact: ten charges of 0.1 add up to exactly 1.0 and
//! three charges of 0.1 fit exactly in 0.3. Decimal strings (from the command line
//! or dpq.toml) are parsed digit by digit, never through a binary float.
//! A TOML float is first printed in Rust's shortest round-trip form (`0.1` prints
//! as `0.1`), which recovers the decimal the user wrote.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Sub};
use std::str::FromStr;

/// Atto-units per 1.0.
pub const SCALE: u128 = 1_000_000_000_000_000_000;

/// A non-negative privacy amount (ε or δ), exact to 10⁻¹⁸.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(u128);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AmountError {
    #[error("`{0}` is not a decimal number (write e.g. 0.5 or 1e-6)")]
    Syntax(String),
    #[error("`{0}` is negative; privacy amounts are ≥ 0")]
    Negative(String),
    #[error("`{0}` has more precision than dpq keeps (10⁻¹⁸); round it")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
    #[error("`{0}` is not finite")]
    NotFinite(String),
}

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub const ONE: Amount = Amount(SCALE);

    pub const fn from_atto(atto: u128) -> Amount {
        Amount(atto)
    }
    pub const fn atto(self) -> u128 {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    /// Nearest f64 (for display and for the float-valued accountants only).
    pub fn to_f64(self) -> f64 {
        let int = (self.0 / SCALE) as f64;
        let frac = (self.0 % SCALE) as f64 / SCALE as f64;
        int + frac
    }
    /// From an f64 via its shortest decimal representation. Errors if it needs more
    /// than 18 decimal places.
    pub fn from_f64(x: f64) -> Result<Amount, AmountError> {
        if !x.is_finite() {
            return Err(AmountError::NotFinite(format!("{x}")));
        }
        format!("{x:?}").parse()
    }
    /// The largest amount ≤ x representable (used where rounding down is the safe
    /// direction, e.g. a mechanism's own ε when the charge is the exact amount).
    pub fn from_f64_floor(x: f64) -> Amount {
        if !(x > 0.0) {
            return Amount::ZERO;
        }
        let scaled = x * SCALE as f64;
        if scaled >= u128::MAX as f64 {
            return Amount(u128::MAX);
        }
        let mut a = scaled as u128;
        // guard against the multiplication having rounded up
        while a > 0 && Amount(a).to_f64() > x {
            a -= 1;
        }
        Amount(a)
    }
    /// The smallest amount ≥ x representable (safe direction for charges).
    pub fn from_f64_ceil(x: f64) -> Amount {
        if !(x > 0.0) {
            return Amount::ZERO;
        }
        let mut a = Amount::from_f64_floor(x);
        while a.to_f64() < x {
            a = Amount(a.0 + 1);
        }
        a
    }
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
    /// Multiply by a rational p/q, rounding down.
    pub fn mul_ratio_floor(self, p: u128, q: u128) -> Amount {
        assert!(q > 0);
        // (a*p)/q without overflow for the ranges dpq uses (a < 2^100, p,q < 2^20)
        let a = self.0;
        let (hi, lo) = (a / q, a % q);
        Amount(hi * p + lo * p / q)
    }
    /// The exact rational value as (numerator, denominator) in lowest terms.
    pub fn as_ratio(self) -> (u128, u128) {
        let g = gcd(self.0, SCALE);
        if g == 0 {
            return (0, 1);
        }
        (self.0 / g, SCALE / g)
    }
}

pub fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Amount, AmountError> {
        let t = s.trim();
        let err = || AmountError::Syntax(s.to_string());
        if t.is_empty() {
            return Err(err());
        }
        if let Some(rest) = t.strip_prefix('-') {
            if rest.chars().all(|c| c == '0' || c == '.') {
                return Ok(Amount::ZERO);
            }
            return Err(AmountError::Negative(s.to_string()));
        }
        let t = t.strip_prefix('+').unwrap_or(t);
        let lower = t.to_ascii_lowercase();
        if lower == "inf" || lower == "infinity" || lower == "nan" {
            return Err(AmountError::NotFinite(s.to_string()));
        }
        let (mant, exp) = match lower.find('e') {
            Some(i) => {
                let e: i32 = lower[i + 1..].parse().map_err(|_| err())?;
                (&lower[..i], e)
            }
            None => (&lower[..], 0),
        };
        let (ip, fp) = match mant.find('.') {
            Some(i) => (&mant[..i], &mant[i + 1..]),
            None => (mant, ""),
        };
        if ip.is_empty() && fp.is_empty() {
            return Err(err());
        }
        if !ip.bytes().all(|b| b.is_ascii_digit()) || !fp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        // digits as one integer, with a decimal exponent
        let digits: String = format!("{ip}{fp}");
        let digits = digits.trim_start_matches('0');
        let mut exp10: i64 = exp as i64 - fp.len() as i64 + 18;
        let mut digits = digits.to_string();
        if digits.is_empty() {
            return Ok(Amount::ZERO);
        }
        // strip trailing zeros into the exponent
        while digits.ends_with('0') {
            digits.pop();
            exp10 += 1;
        }
        if exp10 < 0 {
            return Err(AmountError::TooPrecise(s.to_string()));
        }
        if digits.len() > 38 || exp10 > 38 {
            return Err(AmountError::TooLarge(s.to_string()));
        }
        let mut v: u128 = digits.parse().map_err(|_| AmountError::TooLarge(s.to_string()))?;
        for _ in 0..exp10 {
            v = v.checked_mul(10).ok_or_else(|| AmountError::TooLarge(s.to_string()))?;
        }
        Ok(Amount(v))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / SCALE;
        let frac = self.0 % SCALE;
        if frac == 0 {
            return write!(f, "{int}");
        }
        let mut fs = format!("{frac:018}");
        while fs.ends_with('0') {
            fs.pop();
        }
        if int == 0 && fs.starts_with("0000") {
            // small amounts such as δ read better in scientific notation
            let lead = fs.len() - fs.trim_start_matches('0').len();
            let sig = fs.trim_start_matches('0');
            let (first, rest) = sig.split_at(1);
            if rest.is_empty() {
                return write!(f, "{first}e-{}", lead + 1);
            }
            return write!(f, "{first}.{rest}e-{}", lead + 1);
        }
        write!(f, "{int}.{fs}")
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self})")
    }
}

impl Add for Amount {
    type Output = Amount;
    fn add(self, o: Amount) -> Amount {
        Amount(self.0.checked_add(o.0).expect("privacy amount overflow"))
    }
}
impl Sub for Amount {
    type Output = Amount;
    fn sub(self, o: Amount) -> Amount {
        Amount(self.0.checked_sub(o.0).expect("privacy amount underflow"))
    }
}
impl Sum for Amount {
    fn sum<I: Iterator<Item = Amount>>(iter: I) -> Amount {
        iter.fold(Amount::ZERO, |a, b| a + b)
    }
}

impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Amount {
        s.parse().unwrap()
    }

    #[test]
    fn ten_tenths_are_exactly_one() {
        let tenth = a("0.1");
        let total: Amount = std::iter::repeat_n(tenth, 10).sum();
        assert_eq!(total, Amount::ONE);
        assert!(total + tenth > Amount::ONE);
        let three: Amount = std::iter::repeat_n(tenth, 3).sum();
        assert_eq!(three, a("0.3"));
    }

    #[test]
    fn parses_forms() {
        assert_eq!(a("1e-6").atto(), 1_000_000_000_000);
        assert_eq!(a("0.5"), a(".5"));
        assert_eq!(a("10"), a("1e1"));
        assert_eq!(a("2.50"), a("2.5"));
        assert_eq!(a("0"), Amount::ZERO);
        assert_eq!(Amount::from_f64(0.1).unwrap(), a("0.1"));
        assert_eq!(Amount::from_f64(1e-6).unwrap(), a("0.000001"));
        assert!(matches!("1e-19".parse::<Amount>(), Err(AmountError::TooPrecise(_))));
        assert!(matches!("-1".parse::<Amount>(), Err(AmountError::Negative(_))));
        assert!(matches!("abc".parse::<Amount>(), Err(AmountError::Syntax(_))));
        assert!(matches!("nan".parse::<Amount>(), Err(AmountError::NotFinite(_))));
        assert!(matches!("1e40".parse::<Amount>(), Err(AmountError::TooLarge(_))));
    }

    #[test]
    fn displays() {
        assert_eq!(a("0.1").to_string(), "0.1");
        assert_eq!(a("10").to_string(), "10");
        assert_eq!(a("1e-6").to_string(), "1e-6");
        assert_eq!(a("2.5e-7").to_string(), "2.5e-7");
        assert_eq!(a("0.0125").to_string(), "0.0125");
    }

    proptest! {
        #[test]
        fn display_round_trips(x in 0u128..(1u128 << 100)) {
            let v = Amount::from_atto(x);
            prop_assert_eq!(v.to_string().parse::<Amount>().unwrap(), v);
        }

        #[test]
        fn floor_ceil_bracket(x in 0.0f64..1e6) {
            let lo = Amount::from_f64_floor(x);
            let hi = Amount::from_f64_ceil(x);
            prop_assert!(lo <= hi);
            prop_assert!(lo.to_f64() <= x);
            prop_assert!(hi.to_f64() >= x);
        }
    }
}
