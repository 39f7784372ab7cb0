//! Resource quantities (`500m`, `128Mi`, `1e3`) as exact integers of billionths, with the
//! format they were written in, printed in Kubernetes' canonical form: the largest suffix of
//! that format that keeps the number whole (`1000m` is `1`, `1536Mi` stays `1536Mi`, 1024
//! bytes written as `1Ki` print `1Ki`). Sums keep the format of their first non-zero term, so
//! a quota's memory reads `64Mi` and its CPU `100m`, as on Kubernetes.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity was written, hence how it prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `k`, `M`, `m`, `n`… or no suffix.
    DecimalSi,
    /// `Ki`, `Mi`, `Gi`…
    BinarySi,
    /// `1e3`.
    DecimalExponent,
}

/// A quantity: billionths of its unit (a CPU's nanocores, a byte's billionths), exactly.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    pub nanos: i128,
    pub format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: Format::DecimalSi,
    };

    /// A whole number (an object count).
    pub fn count(n: i64) -> Quantity {
        Quantity {
            nanos: n as i128 * NANO,
            format: Format::DecimalSi,
        }
    }

    /// Parse a quantity as Kubernetes writes one; None when it is not one. Digits below a
    /// billionth round up, as Kubernetes rounds them.
    pub fn parse(q: &str) -> Option<Quantity> {
        let end = q
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(q.len());
        let (number, suffix) = q.split_at(end);
        let (exp10, binary, format) = match suffix {
            "" => (0, 0, Format::DecimalSi),
            "n" => (-9, 0, Format::DecimalSi),
            "u" => (-6, 0, Format::DecimalSi),
            "m" => (-3, 0, Format::DecimalSi),
            "k" => (3, 0, Format::DecimalSi),
            "M" => (6, 0, Format::DecimalSi),
            "G" => (9, 0, Format::DecimalSi),
            "T" => (12, 0, Format::DecimalSi),
            "P" => (15, 0, Format::DecimalSi),
            "E" => (18, 0, Format::DecimalSi),
            "Ki" => (0, 10, Format::BinarySi),
            "Mi" => (0, 20, Format::BinarySi),
            "Gi" => (0, 30, Format::BinarySi),
            "Ti" => (0, 40, Format::BinarySi),
            "Pi" => (0, 50, Format::BinarySi),
            "Ei" => (0, 60, Format::BinarySi),
            s if s.len() > 1 && s.starts_with(['e', 'E']) => {
                (s[1..].parse::<i32>().ok()?, 0, Format::DecimalExponent)
            }
            _ => return None,
        };
        let (sign, number) = match number.strip_prefix('-') {
            Some(rest) => (-1, rest),
            None => (1, number.strip_prefix('+').unwrap_or(number)),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let digits = format!("{int}{frac}");
        let mut value: i128 = digits.parse().ok()?;
        let scale = exp10 - frac.len() as i32 + 9;
        if scale >= 0 {
            value = value.checked_mul(10i128.checked_pow(scale as u32)?)?;
        } else {
            let div = 10i128.checked_pow((-scale) as u32)?;
            value = (value + div - 1) / div;
        }
        value = value.checked_mul(1i128 << binary)?;
        Some(Quantity {
            nanos: sign * value,
            format,
        })
    }

    /// Parse a JSON quantity (a string, or a bare number).
    pub fn from_json(v: &serde_json::Value) -> Option<Quantity> {
        match v {
            serde_json::Value::String(s) => Quantity::parse(s),
            serde_json::Value::Number(n) => Quantity::parse(&n.to_string()),
            _ => None,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

/// The sum, in the format of the first non-zero term.
impl std::ops::Add for Quantity {
    type Output = Quantity;

    fn add(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos + other.nanos,
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }
}

impl std::ops::Sub for Quantity {
    type Output = Quantity;

    fn sub(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos - other.nanos,
            format: self.format,
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        if self.format == Format::BinarySi && abs % NANO == 0 {
            // The largest power of 1024 that divides the whole number; below 1Ki, plain.
            let whole = abs / NANO;
            let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut power = 0;
            while power < 6 && whole % (1i128 << (10 * (power + 1))) == 0 {
                power += 1;
            }
            let mantissa = whole >> (10 * power);
            return write!(f, "{sign}{mantissa}{}", suffixes[power]);
        }
        // Decimal: the largest exponent (a multiple of 3, from n to E) keeping it whole.
        let suffixes = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
        let mut step = 0;
        while step < 9 && abs % 10i128.pow(3 * (step as u32 + 1)) == 0 {
            step += 1;
        }
        let mantissa = abs / 10i128.pow(3 * step as u32);
        if self.format == Format::DecimalExponent {
            let exp = 3 * step as i32 - 9;
            return match exp {
                0 => write!(f, "{sign}{mantissa}"),
                e => write!(f, "{sign}{mantissa}e{e}"),
            };
        }
        write!(f, "{sign}{mantissa}{}", suffixes[step])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(s: &str) -> String {
        Quantity::parse(s).unwrap().to_string()
    }

    #[test]
    fn prints_in_kubes_canonical_form() {
        for (written, printed) in [
            ("1000m", "1"),
            ("100m", "100m"),
            ("1.5", "1500m"),
            ("0.1", "100m"),
            ("2k", "2k"),
            ("1500", "1500"),
            ("128Mi", "128Mi"),
            ("1536Mi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("512", "512"),
            ("1e3", "1e3"),
            ("0", "0"),
            ("-1", "-1"),
            ("1n", "1n"),
        ] {
            assert_eq!(canonical(written), printed, "{written}");
        }
        for bad in ["", "abc", "1x", "1..2", "--1", "Mi", "1e"] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sums_keep_the_first_non_zero_format() {
        let mi = Quantity::parse("64Mi").unwrap();
        let sum = Quantity::ZERO + mi + mi;
        assert_eq!(sum.to_string(), "128Mi");
        let cpu = Quantity::parse("100m").unwrap() + Quantity::parse("900m").unwrap();
        assert_eq!(cpu.to_string(), "1");
        assert!(Quantity::parse("1").unwrap() == Quantity::parse("1000m").unwrap());
    }
}
