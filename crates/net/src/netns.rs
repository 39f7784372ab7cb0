//! Network namespaces: run code inside one, and named namespaces like `ip netns add`.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{Error, Result};

/// Where `ip netns` keeps named namespaces; yun's names there start with `yun`.
pub const NETNS_DIR: &str = "/run/netns";

/// Run `f` on a fresh thread that has joined the network namespace at `netns` (a path such as
/// `/proc/PID/ns/net` or `/run/netns/NAME`). Only that thread switches; the caller's threads
/// stay where they are.
pub fn run_in<T, F>(netns: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let ns = File::open(netns).map_err(|e| Error::Io(format!("opening {}", netns.display()), e))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Io(format!("joining {}", netns.display()), e.into()))?;
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A named network namespace bound at /run/netns/NAME, removed by [`NamedNetns::delete`]
/// (or on drop when created with `remove_on_drop`).
#[derive(Debug)]
pub struct NamedNetns {
    path: PathBuf,
    remove_on_drop: bool,
}

impl NamedNetns {
    /// Create `/run/netns/NAME` holding a new, empty network namespace (loopback down).
    pub fn create(name: &str, remove_on_drop: bool) -> Result<Self> {
        crate::check_ifname(name)?;
        fs::create_dir_all(NETNS_DIR).map_err(|e| Error::Io(format!("creating {NETNS_DIR}"), e))?;
        let path = Path::new(NETNS_DIR).join(name);
        File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::Io(format!("creating {}", path.display()), e))?;
        let bound = std::thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                // unshare affects only this thread's network namespace, which the bind mount
                // then keeps alive after the thread ends.
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::Io("unsharing a network namespace".into(), e.into()))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| Error::Io(format!("binding {}", path.display()), e.into()))
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        if let Err(e) = bound {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(NamedNetns {
            path,
            remove_on_drop,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unbind and remove the namespace file; the namespace dies with its last user.
    pub fn delete(mut self) -> Result<()> {
        self.remove_on_drop = false;
        remove(&self.path)
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = remove(&self.path);
        }
    }
}

fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::Io(
                format!("unmounting {}", path.display()),
                e.into(),
            ))
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Io(format!("removing {}", path.display()), e))
        }
        _ => Ok(()),
    }
}
