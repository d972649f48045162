//! The allowed range of every number a user gives the trainer: a flag, a key of a
//! training or pipeline config, a field of a settings struct. A value is checked when it
//! is parsed (clap's value parser for flags, `validate` right after a config file is read),
//! so `--lr nan` or `temperature = -1` stops the command before any work, with a message
//! that names the setting, the value and the range; the library entry points check their
//! settings again, so no caller can hand NaN to a training loop or a file.
//!
//! A [`Bound`] is a closed or open interval; non-finite values (NaN, inf) are always out.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// An interval of allowed values. Both ends are finite or infinite; NaN and +-inf are never
/// allowed, whatever the ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub min: f64,
    /// `min` itself is allowed.
    pub min_inclusive: bool,
    pub max: f64,
    pub max_inclusive: bool,
}

impl Bound {
    /// `v > 0`.
    pub const POSITIVE: Bound = Bound::above(0.0);
    /// `v >= 0`.
    pub const NON_NEGATIVE: Bound = Bound::at_least(0.0);
    /// `v >= 1` (counts, sizes).
    pub const AT_LEAST_ONE: Bound = Bound::at_least(1.0);
    /// `0 <= v <= 1` (probabilities, shares, thresholds on posteriors).
    pub const UNIT: Bound = Bound::between(0.0, 1.0);
    /// `-1 <= v <= 1` (cosine similarities).
    pub const COSINE: Bound = Bound::between(-1.0, 1.0);
    /// Any finite value.
    pub const FINITE: Bound = Bound {
        min: f64::NEG_INFINITY,
        min_inclusive: false,
        max: f64::INFINITY,
        max_inclusive: false,
    };

    /// `v >= min`.
    pub const fn at_least(min: f64) -> Bound {
        Bound {
            min,
            min_inclusive: true,
            max: f64::INFINITY,
            max_inclusive: false,
        }
    }

    /// `v > min`.
    pub const fn above(min: f64) -> Bound {
        Bound {
            min,
            min_inclusive: false,
            max: f64::INFINITY,
            max_inclusive: false,
        }
    }

    /// `min <= v <= max`.
    pub const fn between(min: f64, max: f64) -> Bound {
        Bound {
            min,
            min_inclusive: true,
            max,
            max_inclusive: true,
        }
    }

    /// Whether `v` is finite and inside.
    pub fn contains(&self, v: f64) -> bool {
        let lo = if self.min_inclusive {
            v >= self.min
        } else {
            v > self.min
        };
        let hi = if self.max_inclusive {
            v <= self.max
        } else {
            v < self.max
        };
        v.is_finite() && lo && hi
    }

    /// What the range allows, in words: `a finite number above 0`, `a whole number of at
    /// least 1`, `a number from 0 to 1`.
    pub fn describe(&self, whole: bool) -> String {
        let kind = if whole {
            "a whole number"
        } else {
            "a finite number"
        };
        let lo = if self.min_inclusive {
            "of at least"
        } else {
            "above"
        };
        let hi = if self.max_inclusive {
            "at most"
        } else {
            "below"
        };
        match (self.min.is_finite(), self.max.is_finite()) {
            (false, false) => kind.to_string(),
            (true, false) => format!("{kind} {lo} {}", self.min),
            (false, true) => format!("{kind} {hi} {}", self.max),
            (true, true) if self.min_inclusive && self.max_inclusive => {
                let kind = if whole { "a whole number" } else { "a number" };
                format!("{kind} from {} to {}", self.min, self.max)
            }
            (true, true) => format!("{kind} {lo} {} and {hi} {}", self.min, self.max),
        }
    }
}

/// A setting outside its range.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{name} = {value} is out of range: expected {expected}")]
pub struct BoundError {
    /// The setting as the user wrote it: `--lr`, `[train] lr`.
    pub name: String,
    pub value: String,
    pub expected: String,
}

/// The number types settings use.
pub trait Number: Copy + fmt::Display + FromStr + Send + Sync + 'static {
    /// Integers: described as whole numbers.
    const WHOLE: bool;
    fn to_f64(self) -> f64;
}

macro_rules! number {
    ($($t:ty => $whole:expr),*) => {
        $(impl Number for $t {
            const WHOLE: bool = $whole;
            fn to_f64(self) -> f64 {
                self as f64
            }
        })*
    };
}
number!(f64 => false, f32 => false, usize => true, u32 => true, u64 => true);

/// `v` when it is inside `bound`; else an error naming `name`.
pub fn check<T: Number>(name: &str, v: T, bound: Bound) -> Result<T, BoundError> {
    if bound.contains(v.to_f64()) {
        Ok(v)
    } else {
        Err(BoundError {
            name: name.to_string(),
            value: v.to_string(),
            expected: bound.describe(T::WHOLE),
        })
    }
}

/// A clap value parser: parses a `T` and checks it against `bound`, so an out-of-range
/// flag fails at parse time (`invalid value 'nan' for '--lr <LR>': expected a finite number
/// above 0`).
pub fn parser<T: Number>(bound: Bound) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync {
    move |s: &str| {
        let v: T = s
            .trim()
            .parse()
            .map_err(|_| format!("not a number; expected {}", bound.describe(T::WHOLE)))?;
        if bound.contains(v.to_f64()) {
            Ok(v)
        } else {
            Err(format!("expected {}", bound.describe(T::WHOLE)))
        }
    }
}

/// Collects the first out-of-range setting of a settings struct, naming each with a
/// prefix (`[train] `, or `` for a flat file).
pub struct Checker<'a> {
    prefix: &'a str,
    first: Option<BoundError>,
}

impl<'a> Checker<'a> {
    pub fn new(prefix: &'a str) -> Self {
        Checker {
            prefix,
            first: None,
        }
    }

    /// Checks one setting; the first failure is kept.
    pub fn check<T: Number>(&mut self, key: &str, v: T, bound: Bound) -> &mut Self {
        if self.first.is_none() {
            if let Err(e) = check(&format!("{}{key}", self.prefix), v, bound) {
                self.first = Some(e);
            }
        }
        self
    }

    /// The first failure, if any.
    pub fn finish(&mut self) -> Result<(), BoundError> {
        match self.first.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_never_inside() {
        for b in [Bound::POSITIVE, Bound::UNIT, Bound::FINITE, Bound::COSINE] {
            assert!(!b.contains(f64::NAN));
            assert!(!b.contains(f64::INFINITY));
            assert!(!b.contains(f64::NEG_INFINITY));
        }
        assert!(Bound::FINITE.contains(-1e300));
    }

    #[test]
    fn ends_are_open_or_closed_as_declared() {
        assert!(!Bound::POSITIVE.contains(0.0) && Bound::POSITIVE.contains(1e-12));
        assert!(Bound::NON_NEGATIVE.contains(0.0) && !Bound::NON_NEGATIVE.contains(-1e-12));
        assert!(Bound::UNIT.contains(0.0) && Bound::UNIT.contains(1.0));
        assert!(!Bound::UNIT.contains(1.0 + 1e-12));
    }

    #[test]
    fn messages_name_the_setting_the_value_and_the_range() {
        let e = check("--lr", f64::NAN, Bound::POSITIVE).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--lr = NaN is out of range: expected a finite number above 0"
        );
        let e = check("[label] concurrency", 0usize, Bound::AT_LEAST_ONE).unwrap_err();
        assert!(
            e.to_string().contains("a whole number of at least 1"),
            "{e}"
        );
        let e = check("temperature", -1.0f64, Bound::between(0.0, 2.0)).unwrap_err();
        assert!(e.to_string().contains("a number from 0 to 2"), "{e}");
    }

    #[test]
    fn the_clap_parser_refuses_what_check_refuses() {
        let p = parser::<f64>(Bound::POSITIVE);
        assert_eq!(p("0.5"), Ok(0.5));
        for bad in ["nan", "NaN", "inf", "-inf", "0", "-1", "x", ""] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let p = parser::<usize>(Bound::AT_LEAST_ONE);
        assert_eq!(p("3"), Ok(3));
        assert!(p("0").is_err() && p("-1").is_err());
    }

    #[test]
    fn the_checker_keeps_the_first_failure_with_its_prefix() {
        let e = Checker::new("[train] ")
            .check("epochs", 3usize, Bound::AT_LEAST_ONE)
            .check("lr", f64::INFINITY, Bound::POSITIVE)
            .check("batch", 0usize, Bound::AT_LEAST_ONE)
            .finish()
            .unwrap_err();
        assert_eq!(e.name, "[train] lr");
    }
}
