//! One resource metric → a replica count, as kube's replica calculator works it out: the
//! pods' usage against their requests (Utilization) or per pod (AverageValue), a 10% tolerance
//! around the target, pods not yet running or being deleted left out, CPU samples of pods not
//! yet ready (or ready for less than one metrics window) left out, and pods without a sample
//! counted so that they damp the change rather than drive it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// kube's default `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// kube's `--horizontal-pod-autoscaler-cpu-initialization-period`: while a pod is this young,
/// a CPU sample taken before it has been ready for a whole window is not trusted.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// kube's `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// The two resources the metrics API reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// In millicores.
    Cpu,
    /// In bytes.
    Memory,
}

impl Resource {
    pub fn parse(name: &str) -> Option<Resource> {
        match name {
            "cpu" => Some(Resource::Cpu),
            "memory" => Some(Resource::Memory),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }

    /// A quantity in this resource's unit (millicores or bytes).
    pub fn amount(self, q: &str) -> Option<i64> {
        match self {
            Resource::Cpu => yun_agent::quantity::millicores(q).ok(),
            Resource::Memory => yun_agent::quantity::bytes(q).ok(),
        }
    }

    /// An amount as kube writes it in a status (`250m`, `2`, `10485760`, `64M`).
    pub fn quantity(self, amount: i64) -> String {
        let (mut v, mut i) = match self {
            Resource::Cpu if amount % 1000 != 0 => return format!("{amount}m"),
            Resource::Cpu => (amount / 1000, 0),
            Resource::Memory => (amount, 0),
        };
        const SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
        while v != 0 && v % 1000 == 0 && i + 1 < SUFFIXES.len() {
            v /= 1000;
            i += 1;
        }
        format!("{v}{}", SUFFIXES[i])
    }
}

/// One container's figures for both resources (requests, or usage): None where it has none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub container: String,
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
}

impl Figures {
    fn of(&self, r: Resource) -> Option<i64> {
        match r {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
        }
    }
}

/// What the calculation knows of one pod the target selects.
#[derive(Clone, Debug, Default)]
pub struct PodState {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    /// The Ready condition: its status and when it last changed.
    pub ready: Option<(bool, Timestamp)>,
    /// `status.startTime`.
    pub started: Option<Timestamp>,
    /// Each container's requests.
    pub requests: Vec<Figures>,
}

/// A pod's sample from the metrics API.
#[derive(Clone, Debug)]
pub struct Usage {
    pub containers: Vec<Figures>,
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// What a metric asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// An amount per pod (in the resource's unit).
    AverageValue(i64),
}

/// A metric's proposal: the replica count, and what to report as its current value.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    /// Percent of requests (Utilization targets only).
    pub utilization: Option<i32>,
    /// The average per pod, in the resource's unit.
    pub average: i64,
}

/// How the pods fall for a resource: those whose samples count, those not ready (CPU only),
/// those without a sample, and those left out.
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn group(
    pods: &[PodState],
    samples: &BTreeMap<String, (i64, Timestamp, Duration)>,
    r: Resource,
    now: Timestamp,
) -> Groups {
    let mut g = Groups {
        ready: 0,
        unready: BTreeSet::new(),
        missing: BTreeSet::new(),
        ignored: BTreeSet::new(),
    };
    for p in pods {
        if p.deleting || p.phase == "Failed" || p.phase == "Pending" {
            g.ignored.insert(p.name.clone());
            continue;
        }
        let Some((_, taken, window)) = samples.get(&p.name) else {
            g.missing.insert(p.name.clone());
            continue;
        };
        if r == Resource::Cpu {
            let unready = match (p.ready, p.started) {
                (Some((ready, since)), Some(started)) => {
                    if after(started, CPU_INITIALIZATION_PERIOD) > now {
                        // Young pod: its sample must cover a whole window of readiness.
                        !ready || *taken < after(since, *window)
                    } else {
                        // Unready and never ready since it started.
                        !ready && after(started, INITIAL_READINESS_DELAY) > since
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(p.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// (usage ratio, utilization or average, raw average) of the counted samples.
fn ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: Target,
) -> Result<(f64, i64, i64), String> {
    match target {
        Target::Utilization(t) => {
            let (mut used, mut requested, mut n) = (0i64, 0i64, 0i64);
            for (pod, m) in metrics {
                // A sample without a request is one for a pod not listed: skipped.
                if let Some(r) = requests.get(pod) {
                    used += m;
                    requested += r;
                    n += 1;
                }
            }
            if requested == 0 {
                return Err("no metrics returned matched known pods".into());
            }
            let utilization = used * 100 / requested;
            Ok((utilization as f64 / t as f64, utilization, used / n))
        }
        Target::AverageValue(t) => {
            let average = metrics.values().sum::<i64>() / metrics.len().max(1) as i64;
            Ok((average as f64 / t as f64, average, average))
        }
    }
}

/// The replica count one resource metric proposes for `current` replicas; `container` limits
/// it to one container of each pod (ContainerResource). Errors read like kube's.
pub fn propose(
    r: Resource,
    container: Option<&str>,
    target: Target,
    current: i32,
    pods: &[PodState],
    usage: &BTreeMap<String, Usage>,
    now: Timestamp,
) -> Result<Proposal, String> {
    let wanted = |c: &Figures| container.is_none_or(|n| n == c.container);
    let mut samples = BTreeMap::new();
    for (pod, u) in usage {
        let values: Vec<i64> = u
            .containers
            .iter()
            .filter(|c| wanted(c))
            .filter_map(|c| c.of(r))
            .collect();
        if !values.is_empty() {
            samples.insert(pod.clone(), (values.iter().sum(), u.timestamp, u.window));
        }
    }
    if samples.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {}: no metrics returned from resource metrics API",
            r.name()
        ));
    }
    let groups = group(pods, &samples, r, now);
    let mut metrics: BTreeMap<String, i64> = samples
        .into_iter()
        .filter(|(p, _)| !groups.ignored.contains(p) && !groups.unready.contains(p))
        .filter(|(p, _)| pods.iter().any(|pod| &pod.name == p))
        .map(|(p, (v, _, _))| (p, v))
        .collect();
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let mut requests = BTreeMap::new();
    if let Target::Utilization(_) = target {
        for p in pods {
            let mut sum = 0;
            for c in p.requests.iter().filter(|c| wanted(c)) {
                match c.of(r) {
                    Some(v) => sum += v,
                    None => {
                        return Err(format!(
                            "missing request for {} in container {} of Pod {}",
                            r.name(),
                            c.container,
                            p.name
                        ))
                    }
                }
            }
            requests.insert(p.name.clone(), sum);
        }
    }
    let (usage_ratio, value, raw) = ratio(&metrics, &requests, target)?;
    let utilization = match target {
        Target::Utilization(_) => Some(value as i32),
        Target::AverageValue(_) => None,
    };
    let proposal = |replicas: i32| Proposal {
        replicas,
        utilization,
        average: raw,
    };
    let scale_up_with_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(proposal(current));
        }
        return Ok(proposal((usage_ratio * groups.ready as f64).ceil() as i32));
    }
    // Pods without a sample: on a scale-down they count as using what they request (or the
    // target, if more), on a scale-up as using nothing; so they can only damp the change.
    for p in &groups.missing {
        let fallback = match target {
            Target::Utilization(t) => {
                requests.get(p).copied().unwrap_or(0) * i64::from(t.max(100)) / 100
            }
            Target::AverageValue(t) => t,
        };
        if usage_ratio < 1.0 {
            metrics.insert(p.clone(), fallback);
        } else if usage_ratio > 1.0 {
            metrics.insert(p.clone(), 0);
        }
    }
    if scale_up_with_unready {
        for p in &groups.unready {
            metrics.insert(p.clone(), 0);
        }
    }
    let (new_ratio, _, _) = ratio(&metrics, &requests, target)?;
    let flipped = (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= TOLERANCE || flipped {
        return Ok(proposal(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}
