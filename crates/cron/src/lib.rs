//! Cron schedules as Kubernetes' CronJob reads them (robfig/cron's standard parser): five
//! fields — minute, hour, day of month, month, day of week — each `*`, `?`, a value, a range
//! `a-b`, a step `*/n`, `a-b/n` or `a/n` (from a to the field's end), or a comma list of
//! those; months and weekdays also by name (`jan`, `mon`); and the descriptors `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`. No seconds field.
//!
//! Times are evaluated in an IANA time zone (jiff's database, read from the system's
//! zoneinfo): a schedule says wall-clock times, so "0 9 * * *" in Europe/Paris is 09:00 there
//! in summer and in winter. A wall-clock time skipped by a DST jump fires at the first instant
//! after the gap; one repeated by a fall-back fires once, at its first occurrence.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month or day-of-week field was `*`/`?` (no step): then a day must match
    /// both fields, otherwise either (cron's old rule, which robfig/cron keeps).
    any_day_field_star: bool,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const WEEKDAY: Field = Field {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Field {
    fn value(&self, s: &str) -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.min + i as u32);
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("failed to parse int from {s}: invalid {}", self.name))?;
        if n < self.min || n > self.max {
            return Err(format!(
                "{} value {n} out of range ({}-{})",
                self.name, self.min, self.max
            ));
        }
        Ok(n)
    }

    /// The bit set of one field and whether it was a plain `*`/`?`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        let mut bits = 0u64;
        let mut star = false;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s
                        .parse()
                        .map_err(|_| format!("failed to parse int from {s}: invalid step"))?;
                    if step == 0 {
                        return Err(format!("step of range should be a positive number: {part}"));
                    }
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi, all) = if range == "*" || range == "?" {
                (self.min, self.max, true)
            } else if let Some((a, b)) = range.split_once('-') {
                (self.value(a)?, self.value(b)?, false)
            } else {
                let v = self.value(range)?;
                // "a/n" runs from a to the field's end.
                (v, if step.is_some() { self.max } else { v }, false)
            };
            if lo > hi {
                return Err(format!(
                    "beginning of range ({lo}) beyond end of range ({hi}): {part}"
                ));
            }
            let step = step.unwrap_or(1);
            star |= all && step == 1;
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok((bits, star))
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    /// Parse as Kubernetes validates `spec.schedule`; the error reads like robfig/cron's.
    fn from_str(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => return Err(format!("unrecognized descriptor: {t}")),
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {fields:?}",
                fields.len()
            ));
        }
        let (minutes, _) = MINUTE.parse(fields[0])?;
        let (hours, _) = HOUR.parse(fields[1])?;
        let (days, day_star) = DAY.parse(fields[2])?;
        let (months, _) = MONTH.parse(fields[3])?;
        let (weekdays, weekday_star) = WEEKDAY.parse(fields[4])?;
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day_field_star: day_star || weekday_star,
        })
    }
}

fn has(bits: u64, v: impl Into<i64>) -> bool {
    let v = v.into();
    (0..64).contains(&v) && bits & (1 << v) != 0
}

/// How far ahead to look for a match: a schedule such as "0 0 30 2 *" never fires.
const HORIZON_YEARS: i16 = 5;

impl Schedule {
    fn day_matches(&self, d: Date) -> bool {
        let dom = has(self.days, d.day());
        let dow = has(self.weekdays, d.weekday().to_sunday_zero_offset());
        if self.any_day_field_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `after` that the schedule names, in `tz`; None if there
    /// is none within a few years (an impossible date such as February 30).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        // The next whole minute after `after`.
        let mut t = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = t.year() + HORIZON_YEARS;
        while t.year() <= limit {
            if !has(self.months, t.month()) {
                t = DateTime::from(t.date().first_of_month())
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = DateTime::from(t.date()).checked_add(1.day()).ok()?;
                continue;
            }
            if !has(self.hours, t.hour()) {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(self.minutes, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            // A wall-clock time in a DST gap maps to just after it; in a fold, to the
            // earlier instant — which may not be after `after`: keep looking then.
            let at = tz.to_ambiguous_timestamp(t).compatible().ok()?;
            if at > after {
                return Some(at);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

/// The IANA zone `name` (a CronJob's `spec.timeZone`), or why not, as Kubernetes says it.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.eq_ignore_ascii_case("local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str, tz: &str) -> String {
        let s: Schedule = schedule.parse().unwrap();
        let tz = time_zone(tz).unwrap();
        s.next_after(at(after), &tz).unwrap().to_string()
    }

    #[test]
    fn fields_ranges_steps_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T00:07:30Z", "UTC"),
            "2026-01-01T00:15:00Z"
        );
        assert_eq!(
            next("5-10/2 3 * * *", "2026-01-01T03:07:00Z", "UTC"),
            "2026-01-01T03:09:00Z"
        );
        assert_eq!(
            next("0 0 * JAN,jul MON", "2026-02-01T00:00:00Z", "UTC"),
            "2026-07-06T00:00:00Z"
        );
        // "a/n" runs to the field's end.
        assert_eq!(
            next("50/5 * * * *", "2026-01-01T00:56:00Z", "UTC"),
            "2026-01-01T01:50:00Z"
        );
        // Strictly after: a time on the schedule is not its own next.
        assert_eq!(
            next("* * * * *", "2026-01-01T00:01:00Z", "UTC"),
            "2026-01-01T00:02:00Z"
        );
    }

    #[test]
    fn descriptors() {
        for (d, after, want) in [
            ("@hourly", "2026-03-04T05:06:07Z", "2026-03-04T06:00:00Z"),
            ("@daily", "2026-03-04T05:06:07Z", "2026-03-05T00:00:00Z"),
            ("@midnight", "2026-03-04T05:06:07Z", "2026-03-05T00:00:00Z"),
            // 2026-03-08 is a Sunday.
            ("@weekly", "2026-03-04T05:06:07Z", "2026-03-08T00:00:00Z"),
            ("@monthly", "2026-03-04T05:06:07Z", "2026-04-01T00:00:00Z"),
            ("@yearly", "2026-03-04T05:06:07Z", "2027-01-01T00:00:00Z"),
            ("@annually", "2026-03-04T05:06:07Z", "2027-01-01T00:00:00Z"),
        ] {
            assert_eq!(next(d, after, "UTC"), want, "{d}");
        }
    }

    #[test]
    fn day_of_month_and_weekday_either_match_unless_one_is_a_star() {
        // The 13th or any Friday: 2026-02-06 is a Friday, before the 13th.
        assert_eq!(
            next("0 0 13 * 5", "2026-02-01T00:00:00Z", "UTC"),
            "2026-02-06T00:00:00Z"
        );
        // With a star weekday, only the 13th.
        assert_eq!(
            next("0 0 13 * *", "2026-02-01T00:00:00Z", "UTC"),
            "2026-02-13T00:00:00Z"
        );
    }

    #[test]
    fn evaluated_in_the_time_zone_across_dst() {
        // 09:00 in Paris is 08:00Z in winter and 07:00Z in summer.
        assert_eq!(
            next("0 9 * * *", "2026-01-10T12:00:00Z", "Europe/Paris"),
            "2026-01-11T08:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "2026-07-10T12:00:00Z", "Europe/Paris"),
            "2026-07-11T07:00:00Z"
        );
        // 02:30 does not exist on 2026-03-29 in Paris: it fires just after the jump.
        assert_eq!(
            next("30 2 * * *", "2026-03-29T00:00:00Z", "Europe/Paris"),
            "2026-03-29T01:30:00Z"
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        for (s, needle) in [
            ("* * * *", "expected exactly 5 fields, found 4"),
            ("0 0 0 0 0 0", "expected exactly 5 fields, found 6"),
            ("60 * * * *", "minute value 60 out of range (0-59)"),
            ("* 24 * * *", "hour value 24 out of range"),
            ("* * 0 * *", "day of month value 0 out of range"),
            ("* * * 13 *", "month value 13 out of range"),
            ("* * * * 7", "day of week value 7 out of range"),
            ("*/0 * * * *", "step of range should be a positive number"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1)",
            ),
            ("x * * * *", "failed to parse int from x"),
            ("@every 5m", "unrecognized descriptor"),
            ("@often", "unrecognized descriptor"),
            ("TZ=UTC * * * * *", "use timeZone field instead"),
        ] {
            let e = s.parse::<Schedule>().unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
        assert!(time_zone("Mars/Olympus")
            .unwrap_err()
            .contains("unknown time zone"));
        assert!(time_zone("Local").is_err());
        // A name is looked up in the zone database, never used as a path.
        for name in [
            "../../../etc/passwd",
            "/etc/localtime",
            "Europe/../../../etc/hostname",
        ] {
            assert!(time_zone(name).is_err(), "{name}");
        }
    }

    #[test]
    fn an_impossible_date_never_fires() {
        let s: Schedule = "0 0 30 2 *".parse().unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }
}
