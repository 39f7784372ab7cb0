//! The `yun` binary's command line. Each layer is a library crate; this crate only parses
//! arguments and calls into them.

pub mod cli;
pub mod logging;
pub mod yunc;

use std::ffi::OsString;
use std::path::Path;

/// Dispatch on the name we were invoked as: `yunc` (or anything ending in it) is the
/// runc-compatible runtime; everything else is `yun`.
pub fn main_from_args(args: Vec<OsString>) -> i32 {
    let prog = args
        .first()
        .and_then(|a| {
            Path::new(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    if prog == "yunc" || prog.ends_with("-yunc") {
        return yunc::main(args);
    }
    cli::main(args)
}
