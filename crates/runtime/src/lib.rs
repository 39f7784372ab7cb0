//! yun's OCI container runtime: the library behind `yunc`.
//!
//! The runtime turns an OCI bundle (a root filesystem plus `config.json`) into a running,
//! isolated process: namespaces, cgroups, a pivoted root, reduced privileges and a seccomp
//! filter. Later layers (image builds, the node agent) call it in-process.
//!
//! Creating and exec'ing fork the calling process: call those from a single-threaded
//! process (the `yunc` binary), not from inside a tokio runtime.

pub mod bundle;
pub mod cgroups;
pub mod cloned_exe;
pub mod config;
pub mod console;
mod container;
mod error;
pub mod features;
pub mod hooks;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod state;
mod sync;
pub mod timing;

pub use container::{CreateOptions, Event, ExecOptions, Runtime};
pub use error::Error;
pub use state::{StateReport, Status};
