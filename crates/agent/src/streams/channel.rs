//! The `channel.k8s.io` stream protocol over WebSocket (versions 4 and 5), as the kubelet
//! speaks it: every binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr,
//! 3 error (a metav1 Status once the process ends), 4 resize (JSON `{"Width":W,"Height":H}`)
//! — and v5 adds 255, "close": `[255, CH]` says the peer will write no more on CH (stdin's
//! end of file, which v4 cannot express).

use serde_json::{json, Value};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The protocols served, preferred first (kubectl ≥ 1.30 offers v5 first, older ones v4).
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What one message from the client asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    Resize {
        width: u16,
        height: u16,
    },
    /// No more stdin (v5 only).
    CloseStdin,
    /// A channel or close signal this session has no use for.
    Ignored,
}

/// Decode one binary message; `v5` enables the close signal. Errors name what is wrong.
pub fn decode(v5: bool, msg: &[u8]) -> Result<Incoming<'_>, String> {
    let Some((&ch, data)) = msg.split_first() else {
        return Ok(Incoming::Ignored);
    };
    match ch {
        STDIN => Ok(Incoming::Stdin(data)),
        RESIZE => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Size {
                width: u16,
                height: u16,
            }
            let s: Size = serde_json::from_slice(data)
                .map_err(|e| format!("resize channel: not a {{Width,Height}} object: {e}"))?;
            Ok(Incoming::Resize {
                width: s.width,
                height: s.height,
            })
        }
        CLOSE if v5 => match data.first() {
            Some(&STDIN) => Ok(Incoming::CloseStdin),
            _ => Ok(Incoming::Ignored),
        },
        other => Err(format!("channel {other}: not one a client writes")),
    }
}

/// A message on `channel` carrying `data`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// The Status the error channel carries when the process ends with `code`, as the kubelet
/// writes it: Success for 0, else Failure with reason NonZeroExitCode and an ExitCode cause
/// (kubectl exits with that code).
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: command {command:?} exited with {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A Status for a session that failed before or instead of an exit code.
pub fn failure_status(message: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_messages() {
        assert_eq!(decode(true, b"\x00hi").unwrap(), Incoming::Stdin(b"hi"));
        assert_eq!(
            decode(false, b"\x04{\"Width\":100,\"Height\":30}").unwrap(),
            Incoming::Resize {
                width: 100,
                height: 30
            }
        );
        assert_eq!(decode(true, &[255, 0]).unwrap(), Incoming::CloseStdin);
        assert_eq!(decode(true, &[255, 1]).unwrap(), Incoming::Ignored);
        // v4 has no close signal.
        assert!(decode(false, &[255, 0]).is_err());
        assert!(decode(true, b"\x04{\"Width\":-1}").is_err());
        assert!(decode(true, b"\x01out").is_err());
        assert_eq!(decode(true, b"").unwrap(), Incoming::Ignored);
    }

    #[test]
    fn exit_status_carries_the_code_as_kube_does() {
        assert_eq!(exit_status(&[], 0)["status"], "Success");
        let s = exit_status(&["sh".into()], 3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(frame(STDOUT, b"x"), b"\x01x");
    }
}
