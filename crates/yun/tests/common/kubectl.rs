//! Debian's kubectl 1.20 (extracted by scripts/deps.sh) against a kubeconfig a test's server
//! wrote.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const KUBECTL: &str = "/var/cache/yun-kubectl/usr/bin/kubectl";
/// The image's versioned kubectls, beside the Google Cloud SDK's `bin/`.
pub const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
pub const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// kubectl `bin` (any version) with a discovery cache of its own in `cache` (kept between
/// calls, so each version's cache is its own).
pub fn run_bin(bin: &str, kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("run kubectl")
}

/// stdout then stderr, as one text (for assertions' messages and matching).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run kubectl (scripts/deps.sh installs it)")
}

/// kubectl that must succeed; returns stdout.
pub fn ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = run(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Repeat `kubectl args` until it succeeds with output that satisfies `done`.
pub fn until(kubeconfig: &Path, args: &[&str], secs: u64, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = run(kubeconfig, args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?}: never as expected; last: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// kubectl 1.33 against a test's kubeconfig, with a discovery cache of its own under `dir`.
pub struct Kubectl133 {
    pub kubeconfig: std::path::PathBuf,
    pub cache: std::path::PathBuf,
}

impl Kubectl133 {
    pub fn new(kubeconfig: &Path, dir: &Path) -> Kubectl133 {
        Kubectl133 {
            kubeconfig: kubeconfig.to_path_buf(),
            cache: dir.join("kubectl-1.33-cache"),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_bin(KUBECTL_1_33, &self.kubeconfig, &self.cache, args)
    }

    /// A call that must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl 1.33 {args:?}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `get … -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }
}
