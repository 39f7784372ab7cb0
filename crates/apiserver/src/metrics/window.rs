//! Scraping the agents' `/metrics/resource` and turning two scrapes into rates.
//!
//! CPU usage is a rate, so it needs two readings of the cumulative counters. metrics-server
//! scrapes every node every 15 s and answers from its last two scrapes; yun scrapes on demand
//! instead and keeps, per node, the last two scrapes it made (one [`Window`], so the cache
//! holds one entry per node, and entries of nodes that are gone are dropped):
//!
//! - a window whose later scrape is younger than [`FRESH`] is answered as it is (kubectl top
//!   runs two or three requests in a row; an agent is not read for each);
//! - otherwise the node is scraped again, and the rate runs from the previous later scrape to
//!   the new one if that is at most [`MAX_AGE`] old;
//! - with no usable earlier scrape (the first `kubectl top` after start, or after a long
//!   pause) the node is scraped twice, [`FIRST_WINDOW`] apart, so even the first request
//!   answers, over a short window.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::prom;
use crate::Api;

pub const FRESH: Duration = Duration::from_secs(5);
pub const MAX_AGE: Duration = Duration::from_secs(60);
pub const FIRST_WINDOW: Duration = Duration::from_secs(1);
/// The largest answer read from an agent (16 MiB: tens of thousands of containers).
const MAX_SCRAPE_BYTES: usize = 16 << 20;
/// How long one scrape of an agent may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cumulative CPU counter (seconds) and a working set (bytes) at a time (ms since epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub cpu_seconds: f64,
    pub memory: f64,
    pub at_ms: i64,
}

/// One scrape of one agent.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub node: Option<Point>,
    /// (namespace, pod) → container → its point and start time.
    pub containers: HashMap<(String, String), BTreeMap<String, (Point, f64)>>,
}

/// Usage over a window: CPU in nanocores, memory in bytes, the window's end and length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub nanocores: u64,
    pub memory: u64,
    pub end_ms: i64,
    pub window_ms: i64,
}

/// The rate from `a` to `b`; None when the counter went back (a restart) or no time passed.
pub fn rate(a: &Point, b: &Point) -> Option<Rate> {
    let window_ms = b.at_ms - a.at_ms;
    let used = b.cpu_seconds - a.cpu_seconds;
    if window_ms <= 0 || used < 0.0 {
        return None;
    }
    Some(Rate {
        nanocores: (used * 1e9 / (window_ms as f64 / 1e3)).round() as u64,
        memory: b.memory.max(0.0) as u64,
        end_ms: b.at_ms,
        window_ms,
    })
}

impl Scrape {
    /// Read the samples the agent wrote; the scrape's own time stands in for a sample
    /// without a timestamp.
    pub fn from_text(text: &str, now_ms: i64) -> Result<Scrape, String> {
        let mut s = Scrape::default();
        let mut cpu: HashMap<(String, String, String), (f64, i64)> = HashMap::new();
        let mut memory: HashMap<(String, String, String), f64> = HashMap::new();
        let mut started: HashMap<(String, String, String), f64> = HashMap::new();
        let mut node = (None, None);
        for sample in prom::parse(text)? {
            let at = sample.timestamp_ms.unwrap_or(now_ms);
            let key = || {
                (
                    sample.label("namespace").to_string(),
                    sample.label("pod").to_string(),
                    sample.label("container").to_string(),
                )
            };
            match sample.name.as_str() {
                "node_cpu_usage_seconds_total" => node.0 = Some((sample.value, at)),
                "node_memory_working_set_bytes" => node.1 = Some(sample.value),
                "container_cpu_usage_seconds_total" => {
                    cpu.insert(key(), (sample.value, at));
                }
                "container_memory_working_set_bytes" => {
                    memory.insert(key(), sample.value);
                }
                "container_start_time_seconds" => {
                    started.insert(key(), sample.value);
                }
                _ => {}
            }
        }
        if let (Some((cpu_seconds, at_ms)), Some(memory)) = node {
            s.node = Some(Point {
                cpu_seconds,
                memory,
                at_ms,
            });
        }
        for ((ns, pod, container), (cpu_seconds, at_ms)) in cpu {
            let key = (ns, pod, container);
            let Some(memory) = memory.get(&key).copied() else {
                continue;
            };
            let start = started.get(&key).copied().unwrap_or(0.0);
            let (ns, pod, container) = key;
            s.containers.entry((ns, pod)).or_default().insert(
                container,
                (
                    Point {
                        cpu_seconds,
                        memory,
                        at_ms,
                    },
                    start,
                ),
            );
        }
        Ok(s)
    }
}

/// Two scrapes of one node, the earlier first.
#[derive(Debug, Clone)]
pub struct Window {
    pub earlier: Scrape,
    pub later: Scrape,
    /// When the later one was made.
    pub taken: Instant,
}

impl Window {
    pub fn node(&self) -> Option<Rate> {
        rate(self.earlier.node.as_ref()?, self.later.node.as_ref()?)
    }

    /// Each container's rate, in name order; None when any container of the pod has none (it
    /// is new or restarted within the window), as metrics-server leaves such a pod out.
    pub fn pod(&self, ns: &str, pod: &str) -> Option<Vec<(String, Rate)>> {
        let key = (ns.to_string(), pod.to_string());
        let before = self.earlier.containers.get(&key)?;
        let now = self.later.containers.get(&key)?;
        now.iter()
            .map(|(name, (b, started))| {
                let (a, was_started) = before.get(name)?;
                if was_started != started {
                    return None;
                }
                Some((name.clone(), rate(a, b)?))
            })
            .collect()
    }
}

/// The windows per node (one each).
#[derive(Default)]
pub struct Cache {
    windows: tokio::sync::Mutex<HashMap<String, Window>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Read `/metrics/resource` of the agent at `address:port` with the cluster's token.
async fn scrape(api: &Api, address: &str, port: u16) -> Result<Scrape, String> {
    let url = format!("http://{address}:{port}/metrics/resource");
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&api.token)
        .timeout(SCRAPE_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    // An agent's answer is read up to a bound: a node must not make the API server hold an
    // answer of any size (a few hundred bytes per container is the normal size).
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_SCRAPE_BYTES {
            return Err(format!(
                "{url}: answer larger than {MAX_SCRAPE_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", text.trim()));
    }
    Scrape::from_text(&text, now_ms()).map_err(|e| format!("{url}: {e}"))
}

impl Cache {
    /// A window for each of `nodes` (stored Node objects) whose agent answers; the others are
    /// left out (and logged), as metrics-server leaves out a node it could not scrape. With
    /// `all`, `nodes` is every node and the windows of any other node are dropped.
    pub async fn windows(&self, api: &Api, nodes: &[Value], all: bool) -> HashMap<String, Window> {
        // One request at a time reads and updates the windows: two `kubectl top` at once
        // share the scrapes instead of doubling them.
        let mut windows = self.windows.lock().await;
        if all {
            windows.retain(|name, _| {
                nodes
                    .iter()
                    .any(|n| crate::meta::str_at(n, "/metadata/name") == Some(name.as_str()))
            });
        }
        let mut wanted = Vec::new();
        for node in nodes {
            let name = crate::meta::str_at(node, "/metadata/name").unwrap_or_default();
            if windows.get(name).is_some_and(|w| w.taken.elapsed() < FRESH) {
                continue;
            }
            match crate::rest::agent_address(node) {
                Some((address, port)) => wanted.push((name.to_string(), address, port)),
                None => tracing::debug!("metrics: node {name} has no agent endpoint"),
            }
        }
        let first = futures::future::join_all(
            wanted
                .iter()
                .map(|(_, address, port)| scrape(api, address, *port)),
        )
        .await;
        let mut again = Vec::new();
        for ((name, address, port), result) in wanted.into_iter().zip(first) {
            let later = match result {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("metrics of node {name}: {e}");
                    continue;
                }
            };
            let previous = windows
                .remove(&name)
                .filter(|w| w.taken.elapsed() <= MAX_AGE);
            match previous {
                Some(w) => {
                    let window = Window {
                        earlier: w.later,
                        later,
                        taken: Instant::now(),
                    };
                    windows.insert(name, window);
                }
                None => again.push((name, address, port, later)),
            }
        }
        if !again.is_empty() {
            tokio::time::sleep(FIRST_WINDOW).await;
            let second = futures::future::join_all(
                again
                    .iter()
                    .map(|(_, address, port, _)| scrape(api, address, *port)),
            )
            .await;
            for ((name, _, _, earlier), result) in again.into_iter().zip(second) {
                match result {
                    Ok(later) => {
                        let window = Window {
                            earlier,
                            later,
                            taken: Instant::now(),
                        };
                        windows.insert(name, window);
                    }
                    Err(e) => tracing::warn!("metrics of node {name}: {e}"),
                }
            }
        }
        nodes
            .iter()
            .filter_map(|n| crate::meta::str_at(n, "/metadata/name"))
            .filter_map(|name| Some((name.to_string(), windows.get(name)?.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT_1: &str = "node_cpu_usage_seconds_total 10 1000\n\
        node_memory_working_set_bytes 2048 1000\n\
        container_cpu_usage_seconds_total{container=\"c\",namespace=\"n\",pod=\"p\"} 1 1000\n\
        container_memory_working_set_bytes{container=\"c\",namespace=\"n\",pod=\"p\"} 4096 1000\n\
        container_start_time_seconds{container=\"c\",namespace=\"n\",pod=\"p\"} 5 1000\n";

    #[test]
    fn rates_over_two_scrapes() {
        let earlier = Scrape::from_text(TEXT_1, 0).unwrap();
        let text_2 = TEXT_1
            .replace(" 10 1000", " 10.5 3000")
            .replace("} 1 1000", "} 1.25 3000")
            .replace(" 1000\n", " 3000\n");
        let later = Scrape::from_text(&text_2, 0).unwrap();
        let w = Window {
            earlier,
            later,
            taken: Instant::now(),
        };
        let node = w.node().unwrap();
        assert_eq!(node.nanocores, 250_000_000);
        assert_eq!(node.memory, 2048);
        assert_eq!((node.end_ms, node.window_ms), (3000, 2000));
        let pod = w.pod("n", "p").unwrap();
        assert_eq!(pod.len(), 1);
        assert_eq!(pod[0].0, "c");
        assert_eq!(pod[0].1.nanocores, 125_000_000);
        assert_eq!(pod[0].1.memory, 4096);
        assert!(w.pod("n", "other").is_none());
    }

    #[test]
    fn a_restarted_container_has_no_rate() {
        let earlier = Scrape::from_text(TEXT_1, 0).unwrap();
        let text_2 = TEXT_1
            .replace(" 5 1000", " 6 3000")
            .replace(" 1000\n", " 3000\n");
        let later = Scrape::from_text(&text_2, 0).unwrap();
        let w = Window {
            earlier,
            later,
            taken: Instant::now(),
        };
        assert!(w.pod("n", "p").is_none());
        assert!(rate(
            &Point {
                cpu_seconds: 2.0,
                memory: 0.0,
                at_ms: 0
            },
            &Point {
                cpu_seconds: 1.0,
                memory: 0.0,
                at_ms: 10
            }
        )
        .is_none());
    }
}
