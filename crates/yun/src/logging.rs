//! Log lines in runc's formats, so engines that read runc's `--log` file (conmon, podman)
//! read ours: `--log-format json` gives `{"level":"error","msg":"...","time":"..."}` per line,
//! `text` gives logrus' `time="..." level=error msg="..."`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Where log lines go: a file (`--log`) or stderr.
struct RuncLayer {
    out: Option<Mutex<File>>,
    format: Format,
    max: Level,
}

/// Install the logger. Returns whether lines go to a file (then errors are also printed to
/// stderr, as runc does).
pub fn init(log: Option<&Path>, format: Format, debug: bool) -> anyhow::Result<bool> {
    let out = match log {
        Some(p) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| anyhow::anyhow!("--log {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let to_file = out.is_some();
    let layer = RuncLayer {
        out,
        format,
        max: if debug { Level::DEBUG } else { Level::WARN },
    };
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
    Ok(to_file)
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl RuncLayer {
    /// yun's own events down to `max`; other crates' only when debugging. yun reports the
    /// failures that matter itself, with context; an HTTP client's own line about a refused
    /// connection (a server stopping) would only repeat them.
    fn wants(&self, meta: &tracing::Metadata<'_>) -> bool {
        let ours = meta.target().starts_with("yun");
        *meta.level() <= self.max && (ours || self.max >= Level::DEBUG)
    }
}

impl<S: Subscriber> Layer<S> for RuncLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !self.wants(event.metadata()) {
            return;
        }
        let mut msg = Message::default();
        event.record(&mut msg);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let line = match self.format {
            Format::Json => {
                serde_json::json!({"level": level, "msg": msg.0, "time": time}).to_string()
            }
            Format::Text => format!("time={time:?} level={level} msg={:?}", msg.0),
        };
        match &self.out {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }
}
