//! Tests against the real kernel (run as root). Every cgroup is named "yun-test-<pid>-<n>" and
//! a guard removes it even when an assertion fails.

mod on_v1;
mod on_v2;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::*;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique top-level test cgroup name.
fn unique_root() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    PathBuf::from(format!("/yun-test-{}-{n}", std::process::id()))
}

/// Cleans up on drop: thaws, kills and reaps the children, destroys the managers, then removes
/// whatever is left under the test root in every hierarchy.
struct Guard {
    managers: Vec<Manager>,
    children: Vec<Child>,
    root: PathBuf,
}

impl Guard {
    fn new(root: &Path) -> Guard {
        Guard {
            managers: Vec::new(),
            children: Vec::new(),
            root: root.to_path_buf(),
        }
    }

    fn sleeper(&mut self) -> i32 {
        let child = Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }

    fn kill_children(&mut self) {
        for m in &self.managers {
            let _ = m.thaw();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_children();
        for m in &self.managers {
            let _ = m.destroy();
        }
        let rel = self.root.strip_prefix("/").unwrap();
        for mount in path::mounts().unwrap_or_default() {
            if mount.fstype == "cgroup" || mount.fstype == "cgroup2" {
                remove_tree(&mount.mountpoint.join(rel));
            }
        }
    }
}

/// Tests that may enable controllers in the hybrid cgroup2 root take this lock, and hand the
/// root's cgroup.subtree_control back as they found it (declare it before the [`Guard`], so it
/// is dropped after the test's cgroups are gone). A pure v2 host's root is left alone: the
/// system manages it.
struct Cgroup2RootRestore {
    file: Option<PathBuf>,
    before: String,
    _lock: MutexGuard<'static, ()>,
}

impl Cgroup2RootRestore {
    fn new() -> Cgroup2RootRestore {
        static LOCK: Mutex<()> = Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let file = path::mounts()
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.fstype == "cgroup2" && detect_mode() == Mode::V1)
            .map(|m| m.mountpoint.join("cgroup.subtree_control"));
        let before = file.as_ref().map(read).unwrap_or_default();
        Cgroup2RootRestore {
            file,
            before,
            _lock: lock,
        }
    }
}

impl Drop for Cgroup2RootRestore {
    fn drop(&mut self) {
        let Some(file) = &self.file else { return };
        for c in fs::read_to_string(file)
            .unwrap_or_default()
            .split_whitespace()
        {
            if !self.before.split_whitespace().any(|e| e == c) {
                let _ = fs::write(file, format!("-{c}"));
            }
        }
    }
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("read {}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

fn dir_of(m: &Manager, ctrl: &str) -> PathBuf {
    m.hierarchy(ctrl).unwrap().dir.clone()
}

fn v1_host() -> bool {
    if detect_mode() != Mode::V1 {
        eprintln!("skipping: not a cgroup v1 host");
        return false;
    }
    true
}
