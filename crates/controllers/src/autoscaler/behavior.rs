//! An HPA's `behavior`: stabilization over the recent recommendations, then the scale-up and
//! scale-down policies over the recent scale events, as kube's controller applies them. The
//! history is kept in memory per HPA (as in kube: a restarted controller starts afresh).

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// How policies combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the biggest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Pods(i32),
    Percent(i32),
}

/// One direction's rules, with kube's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub window: Duration,
    pub select: Select,
    /// Each policy and its period.
    pub policies: Vec<(Policy, Duration)>,
}

impl Rules {
    fn of(given: Option<&HPAScalingRules>, up: bool) -> Rules {
        let secs = |s: i32| Duration::from_secs(s.max(0) as u64);
        let default_policies = if up {
            vec![
                (Policy::Pods(4), secs(15)),
                (Policy::Percent(100), secs(15)),
            ]
        } else {
            vec![(Policy::Percent(100), secs(15))]
        };
        let default_window = if up { 0 } else { 300 };
        let Some(r) = given else {
            return Rules {
                window: secs(default_window),
                select: Select::Max,
                policies: default_policies,
            };
        };
        let policies = match &r.policies {
            Some(ps) => ps
                .iter()
                .filter_map(|p| {
                    let policy = match p.type_.as_str() {
                        "Pods" => Policy::Pods(p.value),
                        "Percent" => Policy::Percent(p.value),
                        _ => return None,
                    };
                    Some((policy, secs(p.period_seconds)))
                })
                .collect(),
            None => default_policies,
        };
        Rules {
            window: secs(r.stabilization_window_seconds.unwrap_or(default_window)),
            select: match r.select_policy.as_deref() {
                Some("Min") => Select::Min,
                Some("Disabled") => Select::Disabled,
                _ => Select::Max,
            },
            policies,
        }
    }
}

/// Both directions' rules: kube's defaults where the HPA has no behavior (the API server fills
/// the rest of one that is given).
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

impl Behavior {
    pub fn of(b: Option<&HorizontalPodAutoscalerBehavior>) -> Behavior {
        Behavior {
            up: Rules::of(b.and_then(|b| b.scale_up.as_ref()), true),
            down: Rules::of(b.and_then(|b| b.scale_down.as_ref()), false),
        }
    }

    fn longest_period(rules: &Rules) -> Duration {
        rules
            .policies
            .iter()
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug)]
struct ScaleEvent {
    change: i32,
    at: Instant,
    outdated: bool,
}

/// What one HPA's controller remembers between passes.
#[derive(Clone, Debug, Default)]
pub struct History {
    recommendations: Vec<(i32, Instant)>,
    ups: Vec<ScaleEvent>,
    downs: Vec<ScaleEvent>,
}

/// A limiting step's condition: (reason, message).
pub type Why = (&'static str, &'static str);

fn changed_within(events: &[ScaleEvent], period: Duration, now: Instant) -> i32 {
    events
        .iter()
        .filter(|e| now.saturating_duration_since(e.at) < period)
        .map(|e| e.change)
        .sum()
}

impl History {
    /// The first recommendation is the current count, so a scale-down waits a whole window.
    pub fn start(&mut self, current: i32, now: Instant) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current, now));
        }
    }

    /// Stabilize `desired` within the windows (and remember it): scale-up to the lowest
    /// recommendation of its window, scale-down to the highest of its.
    pub fn stabilize(
        &mut self,
        b: &Behavior,
        current: i32,
        desired: i32,
        now: Instant,
    ) -> (i32, Why) {
        let within = |at: Instant, w: Duration| now.saturating_duration_since(at) < w;
        let (mut up, mut down) = (desired, desired);
        let mut old = None;
        for (i, (rec, at)) in self.recommendations.iter().enumerate() {
            if within(*at, b.up.window) {
                up = up.min(*rec);
            }
            if within(*at, b.down.window) {
                down = down.max(*rec);
            }
            if !within(*at, b.up.window) && !within(*at, b.down.window) {
                old = Some(i);
            }
        }
        let stabilized = current.max(up).min(down);
        match old {
            Some(i) => self.recommendations[i] = (desired, now),
            None => self.recommendations.push((desired, now)),
        }
        let why = if desired >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        };
        (stabilized, why)
    }

    /// Bring `desired` within the rate the policies allow and within min..=max; the reason
    /// says what limited it (or that nothing did).
    pub fn limit(
        &self,
        b: &Behavior,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        now: Instant,
    ) -> (i32, Why) {
        if desired > current {
            let limit = self.up_limit(&b.up, current, now).max(current);
            let (allowed, why) = if max > limit {
                (
                    limit,
                    (
                        "ScaleUpLimit",
                        "the desired replica count is increasing faster than the maximum scale rate",
                    ),
                )
            } else {
                (
                    max,
                    (
                        "TooManyReplicas",
                        "the desired replica count is more than the maximum replica count",
                    ),
                )
            };
            if desired > allowed {
                return (allowed, why);
            }
        } else if desired < current {
            let limit = self.down_limit(&b.down, current, now).min(current);
            let (allowed, why) = if min < limit {
                (
                    limit,
                    (
                        "ScaleDownLimit",
                        "the desired replica count is decreasing faster than the maximum scale rate",
                    ),
                )
            } else {
                (
                    min,
                    (
                        "TooFewReplicas",
                        "the desired replica count is less than the minimum replica count",
                    ),
                )
            };
            if desired < allowed {
                return (allowed, why);
            }
        }
        (
            desired,
            (
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            ),
        )
    }

    /// The replicas each policy had at the start of its period.
    fn period_start(&self, current: i32, period: Duration, now: Instant) -> i32 {
        current - changed_within(&self.ups, period, now) + changed_within(&self.downs, period, now)
    }

    fn up_limit(&self, rules: &Rules, current: i32, now: Instant) -> i32 {
        let proposals = rules.policies.iter().map(|(p, period)| {
            let start = self.period_start(current, *period, now);
            match *p {
                Policy::Pods(n) => start.saturating_add(n),
                // Rounded up, or a small count would never grow.
                Policy::Percent(pc) => {
                    (f64::from(start) * (1.0 + f64::from(pc) / 100.0)).ceil() as i32
                }
            }
        });
        match rules.select {
            Select::Disabled => current,
            Select::Max => proposals.max().unwrap_or(current),
            Select::Min => proposals.min().unwrap_or(current),
        }
    }

    fn down_limit(&self, rules: &Rules, current: i32, now: Instant) -> i32 {
        let proposals = rules.policies.iter().map(|(p, period)| {
            let start = self.period_start(current, *period, now);
            match *p {
                Policy::Pods(n) => start.saturating_sub(n),
                Policy::Percent(pc) => (f64::from(start) * (1.0 - f64::from(pc) / 100.0)) as i32,
            }
        });
        // The biggest change down is the lowest count.
        match rules.select {
            Select::Disabled => current,
            Select::Max => proposals.min().unwrap_or(current),
            Select::Min => proposals.max().unwrap_or(current),
        }
    }

    /// Remember a scale the controller made (the policies count changes within their periods).
    pub fn scaled(&mut self, b: &Behavior, from: i32, to: i32, now: Instant) {
        let (events, rules, change) = if to > from {
            (&mut self.ups, &b.up, to - from)
        } else if to < from {
            (&mut self.downs, &b.down, from - to)
        } else {
            return;
        };
        let longest = Behavior::longest_period(rules);
        for e in events.iter_mut() {
            if now.saturating_duration_since(e.at) > longest {
                e.outdated = true;
            }
        }
        let event = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        match events.iter().position(|e| e.outdated) {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}
