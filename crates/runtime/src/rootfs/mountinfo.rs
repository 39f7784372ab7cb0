//! Fields of /proc/*/mountinfo.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// A path field of mountinfo: the kernel escapes space, tab, newline and backslash as `\ooo`
/// (octal). Works on bytes, so a path that is not UTF-8 (or has a multibyte character after
/// a backslash) comes back as it is.
pub fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn octal_escapes_and_odd_input() {
        assert_eq!(super::unescape("/a\\040b"), Path::new("/a b"));
        assert_eq!(super::unescape("/plain"), Path::new("/plain"));
        assert_eq!(super::unescape("/x\\"), Path::new("/x\\"));
        // A multibyte character right after a backslash: no panic, kept as it is.
        assert_eq!(super::unescape("/\\é1"), Path::new("/\\é1"));
    }
}
