//! CVE-2019-5736: a container must never be able to overwrite the runtime's binary.
//!
//! While yunc sets a container up, its process is visible inside the container (e.g. during
//! exec, or when no pid namespace is used) and `/proc/PID/exe` points at the binary on the
//! host. A malicious container could open it and write to it once yunc exits. So before
//! running any code that enters a container, yunc re-executes itself from a sealed memfd
//! copy: `/proc/PID/exe` then names an anonymous, immutable file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use nix::sys::memfd::{memfd_create, MFdFlags};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Whether a container created from `config.json` could see yunc's own processes while they
/// run yunc code: when it joins or shares a pid namespace. With a new pid namespace the only
/// process in it is the init, which execs the container's program before anything from the
/// image runs (and `exec` refuses containers that have not started), so no copy is needed.
pub fn needed_for_bundle(bundle: &std::path::Path) -> bool {
    let path = bundle.join("config.json");
    // create refuses a config above the limit before touching a container: no copy needed.
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > crate::config::MAX_CONFIG_BYTES) {
        return false;
    }
    let Ok(data) = std::fs::read(&path) else {
        return true;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return true; // create will report the error; be safe meanwhile
    };
    let new_pid_ns = v["linux"]["namespaces"].as_array().is_some_and(|l| {
        l.iter()
            .any(|n| n["type"] == "pid" && n.get("path").is_none_or(|p| p.is_null() || p == ""))
    });
    !new_pid_ns
}

/// Whether this process already runs from a sealed copy.
pub fn is_cloned() -> bool {
    let Ok(exe) = File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS only reads the seals of the file.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// A sealed memfd copy of `file` (the runtime binary), readable by nobody else.
fn sealed_copy(file: &mut File) -> Result<File> {
    let fd = memfd_create(c"yunc", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .context("memfd_create")?;
    let mut copy = File::from(fd);
    std::io::copy(file, &mut copy).context("copy the runtime binary")?;
    // SAFETY: F_ADD_SEALS only adds seals to the memfd we own.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("seal the runtime copy");
    }
    Ok(copy)
}

/// The path to run `exe` from for a caller that starts yunc often (the node agent's exec
/// sessions and exec probes): `/proc/self/fd/N` of a sealed copy this process makes once
/// and keeps, so the yunc it starts is already cloned and does not copy the binary itself on
/// every start (tens of MiB in a release build, hundreds in a debug one: most of an exec's
/// time). A child inherits the path's meaning: it is resolved in the child before exec,
/// when the close-on-exec descriptor is still open. Falls back to `exe` itself (yunc then
/// makes its own copy) when the copy cannot be made.
pub fn shared_path(exe: &Path) -> PathBuf {
    static COPIES: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());
    let mut copies = COPIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, copy)) = copies.iter().find(|(p, _)| p == exe) {
        return fd_path(copy);
    }
    match File::open(exe)
        .map_err(anyhow::Error::from)
        .and_then(|mut f| sealed_copy(&mut f))
    {
        Ok(copy) => {
            let path = fd_path(&copy);
            copies.push((exe.to_path_buf(), copy));
            path
        }
        Err(e) => {
            tracing::warn!(
                "a sealed copy of {}: {e:#}; each yunc copies itself",
                exe.display()
            );
            exe.to_path_buf()
        }
    }
}

fn fd_path(f: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// Re-exec from a sealed memfd copy of our own binary unless already done. Returns only if
/// already cloned (or on error).
pub fn ensure() -> Result<()> {
    if is_cloned() {
        return Ok(());
    }
    let mut exe = File::open("/proc/self/exe").context("open /proc/self/exe")?;
    let copy = sealed_copy(&mut exe)?;
    let args: Vec<std::ffi::CString> = std::env::args_os()
        .map(|a| std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect::<Result<_, _>>()?;
    let env: Vec<std::ffi::CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
            kv.push(b'=');
            kv.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            std::ffi::CString::new(kv)
        })
        .collect::<Result<_, _>>()?;
    let err = nix::unistd::fexecve(&copy, &args, &env).unwrap_err();
    Err(err).context("re-exec the runtime from its sealed copy")
}
