//! `kubectl get` columns of Jobs and CronJobs, as kube's printers fill them.

use serde_json::{json, Value};

use crate::meta::{age, parse_rfc3339, str_at, unix_now};
use crate::table::{containers, selector};

fn has_condition(o: &Value, kind: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// kube's `duration.HumanDuration`.
fn human(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 && s % 60 != 0 => format!("{m}m{}s", s % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 && h % 24 != 0 => format!("{}d{}h", h / 24, h % 24),
        _ => format!("{}d", h / 24),
    }
}

/// A Job's or CronJob's cell of column `col`, None for the columns every kind shares.
pub fn cell(kind: &str, col: &str, o: &Value) -> Option<Value> {
    let int = |p: &str| o.pointer(p).and_then(Value::as_i64);
    Some(match (kind, col) {
        ("Job", "Status") => {
            let status = if has_condition(o, "Complete") {
                "Complete"
            } else if has_condition(o, "Failed") {
                "Failed"
            } else if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else if has_condition(o, "Suspended") {
                "Suspended"
            } else if has_condition(o, "FailureTarget") {
                "FailureTarget"
            } else if has_condition(o, "SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            json!(status)
        }
        ("Job", "Completions") => {
            let done = int("/status/succeeded").unwrap_or(0);
            match (int("/spec/completions"), int("/spec/parallelism")) {
                (Some(c), _) => json!(format!("{done}/{c}")),
                (None, Some(p)) if p > 1 => json!(format!("{done}/1 of {p}")),
                _ => json!(format!("{done}/1")),
            }
        }
        ("Job", "Duration") => {
            let t = |p: &str| str_at(o, p).and_then(parse_rfc3339);
            match (t("/status/startTime"), t("/status/completionTime")) {
                (None, _) => json!(""),
                (Some(s), None) => json!(human(unix_now() - s)),
                (Some(s), Some(e)) => json!(human(e - s)),
            }
        }
        ("Job", "Containers") => json!(containers(o.pointer("/spec/template/spec"), "name")),
        ("Job", "Images") => json!(containers(o.pointer("/spec/template/spec"), "image")),
        ("Job", "Selector") => json!(selector(o.pointer("/spec/selector"))),
        ("CronJob", "Schedule") => json!(str_at(o, "/spec/schedule").unwrap_or("")),
        ("CronJob", "Timezone") => json!(str_at(o, "/spec/timeZone").unwrap_or("<none>")),
        ("CronJob", "Suspend") => json!(if o.pointer("/spec/suspend") == Some(&json!(true)) {
            "True"
        } else {
            "False"
        }),
        ("CronJob", "Active") => json!(o
            .pointer("/status/active")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)),
        ("CronJob", "Last Schedule") => match str_at(o, "/status/lastScheduleTime") {
            Some(t) => json!(age(Some(t))),
            None => json!("<none>"),
        },
        ("CronJob", "Containers") => json!(containers(
            o.pointer("/spec/jobTemplate/spec/template/spec"),
            "name"
        )),
        ("CronJob", "Images") => json!(containers(
            o.pointer("/spec/jobTemplate/spec/template/spec"),
            "image"
        )),
        ("CronJob", "Selector") => json!(selector(o.pointer("/spec/jobTemplate/spec/selector"))),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_and_cronjob_cells() {
        let j = json!({"spec": {"completions": 20, "parallelism": 4},
            "status": {"succeeded": 7, "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T00:02:05Z",
                "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(cell("Job", "Status", &j), Some(json!("Complete")));
        assert_eq!(cell("Job", "Completions", &j), Some(json!("7/20")));
        assert_eq!(cell("Job", "Duration", &j), Some(json!("2m5s")));
        let q = json!({"spec": {"parallelism": 3}, "status": {
            "conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(cell("Job", "Completions", &q), Some(json!("0/1 of 3")));
        assert_eq!(cell("Job", "Status", &q), Some(json!("Suspended")));
        let cj = json!({"spec": {"schedule": "*/1 * * * *", "suspend": false},
            "status": {"active": [{"name": "a"}]}});
        assert_eq!(cell("CronJob", "Timezone", &cj), Some(json!("<none>")));
        assert_eq!(cell("CronJob", "Suspend", &cj), Some(json!("False")));
        assert_eq!(cell("CronJob", "Active", &cj), Some(json!(1)));
        assert_eq!(cell("CronJob", "Last Schedule", &cj), Some(json!("<none>")));
        assert_eq!(human(3 * 3600 + 120), "3h2m");
    }
}
