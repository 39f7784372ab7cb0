//! Opt-in phase timing for profiling the create path: with `YUN_TIMING=1` in the environment,
//! each `mark` prints the monotonic clock (comparable across the parent and its children)
//! and the phase name to stderr. Off, a mark costs one relaxed atomic load.

use std::sync::atomic::{AtomicU8, Ordering};

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 off, 2 on

pub fn mark(phase: &str) {
    let on = match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("YUN_TIMING").is_some();
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    };
    if on {
        let Ok(t) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else {
            return;
        };
        let us = t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000;
        eprintln!("yun-timing {us} {:>6} {phase}", std::process::id());
    }
}
