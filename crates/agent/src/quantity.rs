//! Kubernetes resource quantities ("500m", "1.5", "128Mi", "1G", "2e3") as numbers.

use anyhow::{bail, Result};

/// A quantity in its base unit (cores for CPU, bytes for memory), as a float.
pub fn parse(q: &str) -> Result<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    // A decimal exponent ("1e3", "2E-2") is part of the number, not a suffix.
    let (number, suffix) = match suffix.strip_prefix(['e', 'E']) {
        Some(exp)
            if !exp.is_empty()
                && exp
                    .trim_start_matches(['+', '-'])
                    .chars()
                    .all(|c| c.is_ascii_digit()) =>
        {
            (q, "")
        }
        _ => (number, suffix),
    };
    let value: f64 = match number.parse() {
        Ok(v) if !number.is_empty() => v,
        _ => bail!(
            "quantity {q:?}: expected a number with an optional suffix (m, k, Ki, M, Mi, G, Gi, …)"
        ),
    };
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => bail!("quantity {q:?}: unknown suffix {other:?}"),
    };
    if value < 0.0 {
        bail!("quantity {q:?}: must not be negative");
    }
    Ok(value * factor)
}

/// Memory in bytes, rounded up.
pub fn bytes(q: &str) -> Result<i64> {
    Ok(parse(q)?.ceil() as i64)
}

/// CPU in millicores, rounded up (Kubernetes' smallest CPU unit is 1m).
pub fn millicores(q: &str) -> Result<i64> {
    Ok((parse(q)? * 1000.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(millicores("500m").unwrap(), 500);
        assert_eq!(millicores("1").unwrap(), 1000);
        assert_eq!(millicores("0.25").unwrap(), 250);
        assert_eq!(bytes("128Mi").unwrap(), 128 << 20);
        assert_eq!(bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(bytes("1e3").unwrap(), 1000);
        assert_eq!(bytes("64").unwrap(), 64);
        for bad in ["", "abc", "12Q", "-1", "1.2.3Mi"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
