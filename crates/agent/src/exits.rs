//! Container exits as events. The node agent waits on each running container's process
//! through a pidfd and syncs its pod as soon as the container has exited and its monitor has
//! recorded the exit code. Before, an exit was seen only by the periodic pass (every second,
//! a few pods at a time), so each short-lived pod (a Job's) lived about a second longer than
//! its container. The periodic pass stays as the safety net: for containers started before an
//! agent restart until their pod's next sync, and for a pid reused between reading a record
//! and opening the pidfd (then the wait is on the wrong process and ends late, not wrongly).

use std::collections::HashSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::podwatch::NodePods;
use crate::PodRuntime;

/// How long after the process is gone the monitor may take to record the exit (it first
/// waits for the logger to write the last records).
const RECORD_WAIT: Duration = Duration::from_secs(5);

/// The containers being waited on, by container id (one wait each).
#[derive(Default)]
pub struct ExitWatch {
    watched: Mutex<HashSet<String>>,
}

impl ExitWatch {
    /// Wait on each of `running` (pid, container) of pod `uid` not yet waited on; when one
    /// exits, mark the pod changed so the sync loop picks it up at once.
    pub fn watch(
        self: &Arc<Self>,
        rt: &Arc<PodRuntime>,
        pods: &Arc<NodePods>,
        uid: &str,
        running: Vec<(i32, yun_engine::Container)>,
    ) {
        for (pid, container) in running {
            if !self
                .watched
                .lock()
                .expect("lock")
                .insert(container.id.clone())
            {
                continue;
            }
            let (me, rt, pods, uid) = (self.clone(), rt.clone(), pods.clone(), uid.to_string());
            tokio::spawn(async move {
                if let Err(e) = wait_for_exit(pid).await {
                    tracing::debug!("waiting on container pid {pid}: {e}");
                }
                wait_for_record(&rt, &container).await;
                pods.mark_changed(&uid);
                me.watched.lock().expect("lock").remove(&container.id);
            });
        }
    }
}

/// Return once process `pid` has exited (at once if it is already gone).
async fn wait_for_exit(pid: i32) -> std::io::Result<()> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(()),
            _ => Err(e),
        };
    }
    // SAFETY: the fd was just returned by pidfd_open and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // A pidfd turns readable when its process exits.
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same until it is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// Wait (bounded) until the container's monitor has recorded its exit code, so the sync it
/// triggers reports the container terminated rather than still running.
async fn wait_for_record(rt: &Arc<PodRuntime>, container: &yun_engine::Container) {
    let deadline = tokio::time::Instant::now() + RECORD_WAIT;
    let mut pause = Duration::from_millis(2);
    while tokio::time::Instant::now() < deadline {
        let (rt, c) = (rt.clone(), container.clone());
        let recorded = tokio::task::spawn_blocking(move || rt.engine().exit_code(&c).is_some())
            .await
            .unwrap_or(true);
        if recorded {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
