//! The time types of the protobuf form: metav1.Time/MicroTime (seconds + nanos ↔ RFC 3339 in
//! UTC) and metav1.Duration (nanoseconds ↔ Go's duration string).

use crate::meta::{format_rfc3339, parse_rfc3339};

/// Seconds and nanoseconds of an RFC 3339 UTC time (`2024-05-01T10:00:00.123456Z`).
pub fn parse(s: &str) -> Option<(i64, i32)> {
    let secs = parse_rfc3339(s)?;
    let rest = s.get(19..)?;
    let nanos = match rest.strip_prefix('.') {
        Some(frac) => {
            let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() || digits.len() > 9 {
                return None;
            }
            format!("{digits:0<9}").parse().ok()?
        }
        None => 0,
    };
    Some((secs, nanos))
}

/// RFC 3339 in UTC: seconds for Time, six fraction digits for MicroTime.
pub fn format(secs: i64, nanos: i32, micro: bool) -> String {
    let base = format_rfc3339(secs);
    if !micro {
        return base;
    }
    format!("{}.{:06}Z", base.trim_end_matches('Z'), nanos / 1000)
}

const UNITS: [(&str, i64); 6] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Go's `time.ParseDuration` for the forms Kubernetes writes ("1h2m3.5s", "300ms", "0s").
pub fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "µs" | "μs" => "us",
            other => other,
        };
        let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit)?;
        total += num * *scale as f64;
        rest = &rest[u..];
    }
    let ns = total.round() as i64;
    Some(if neg { -ns } else { ns })
}

/// Go's `time.Duration.String()`: "1h2m3.5s", "1.5ms", "0s".
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let n = ns.unsigned_abs();
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let width = unit.ilog10() as usize;
        let digits = format!("{rem:0width$}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let h = n / 3_600_000_000_000;
    let m = (n / 60_000_000_000) % 60;
    let s = frac(n % 60_000_000_000, 1_000_000_000);
    let mut out = String::from(sign);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(parse("2024-05-01T10:00:00Z"), Some((1714557600, 0)));
        let (s, n) = parse("2024-05-01T10:00:00.123456Z").unwrap();
        assert_eq!((s, n), (1714557600, 123_456_000));
        assert_eq!(format(s, n, true), "2024-05-01T10:00:00.123456Z");
        assert_eq!(format(s, n, false), "2024-05-01T10:00:00Z");
        for d in ["1h2m3.5s", "1m30s", "1.5ms", "0s", "2h0m0s", "250ns"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d, "{d}");
        }
        assert_eq!(parse_duration("90s"), Some(90_000_000_000));
        assert_eq!(parse_duration("bogus"), None);
    }
}
