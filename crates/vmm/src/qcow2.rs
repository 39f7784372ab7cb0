//! What a qcow2 header says about files *other* than the image: its backing file (and that
//! file's format) and an external data file. yun reads this itself before QEMU sees a disk,
//! rather than asking `qemu-img info`: qemu-img opens what the header names (a data file, and
//! with `--backing-chain` the backing files, probing their formats) — the very thing to be
//! checked first. This is the check OpenStack's format inspector makes for the same reason.
//! Layout: QEMU's docs/interop/qcow2.txt (all fields big-endian).

use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub(crate) const MAGIC: &[u8; 4] = b"QFI\xfb";

/// Header extension: the backing file's format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: the external data file's name.
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Incompatible feature bit 2: guest data lives in an external data file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// The parts of a qcow2 header that point outside the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    /// Set when the image keeps its data in another file (name from the header, if any).
    pub data_file: Option<String>,
    /// Encrypted images need secrets yun does not pass; refused.
    pub encrypted: bool,
}

/// Read and check the header of the qcow2 image at `path`.
pub(crate) fn read_header(path: &Path) -> Result<Header> {
    let mut f = fs::File::open(path)?;
    // Header, extensions and backing name all live in the first cluster (at most 2 MiB).
    let mut buf = Vec::new();
    f.by_ref().take(2 << 20).read_to_end(&mut buf)?;
    parse(&buf)
}

fn parse(b: &[u8]) -> Result<Header> {
    let u32_at = |o: usize| -> Result<u32> {
        let s = b.get(o..o + 4).context("header truncated")?;
        Ok(u32::from_be_bytes(s.try_into().unwrap()))
    };
    let u64_at = |o: usize| -> Result<u64> {
        let s = b.get(o..o + 8).context("header truncated")?;
        Ok(u64::from_be_bytes(s.try_into().unwrap()))
    };
    if b.get(..4) != Some(MAGIC) {
        bail!("not a qcow2 image (bad magic)");
    }
    let version = u32_at(4)?;
    if version != 2 && version != 3 {
        bail!("qcow2 version {version} not supported");
    }
    let text = |off: u64, len: u64| -> Result<String> {
        let (off, len) = (off as usize, len as usize);
        let s = b
            .get(off..off.checked_add(len).context("bad offset")?)
            .context("name outside the first cluster")?;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    let mut h = Header::default();
    let backing_offset = u64_at(8)?;
    let backing_size = u32_at(16)?;
    if backing_offset != 0 && backing_size != 0 {
        if backing_size > 1023 {
            bail!("backing file name longer than 1023 bytes");
        }
        h.backing_file = Some(text(backing_offset, backing_size.into())?);
    }
    h.encrypted = u32_at(32)? != 0;
    let mut ext_at = 72usize;
    if version == 3 {
        if u64_at(72)? & INCOMPAT_DATA_FILE != 0 {
            h.data_file = Some(String::new());
        }
        ext_at = u32_at(100)? as usize;
    }
    // Extensions: type, length, data padded to 8 bytes; type 0 ends the list.
    loop {
        let kind = u32_at(ext_at)?;
        if kind == 0 {
            break;
        }
        let len = u32_at(ext_at + 4)? as usize;
        let data = ext_at + 8;
        match kind {
            EXT_BACKING_FORMAT => h.backing_format = Some(text(data as u64, len as u64)?),
            EXT_DATA_FILE => h.data_file = Some(text(data as u64, len as u64)?),
            _ => {}
        }
        ext_at = data + len.div_ceil(8) * 8;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) {
        let st = std::process::Command::new("qemu-img")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("qemu-img (qemu-utils)");
        assert!(st.success(), "qemu-img {args:?}");
    }

    #[test]
    fn headers_made_by_qemu_img() {
        let dir = tempfile::Builder::new()
            .prefix("yun-qcow2-")
            .tempdir()
            .unwrap();
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        qemu_img(&["create", "-q", "-f", "qcow2", &p("plain.qcow2"), "1M"]);
        assert_eq!(
            read_header(Path::new(&p("plain.qcow2"))).unwrap(),
            Header::default()
        );

        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "/etc/shadow",
            "-F",
            "raw",
            &p("v3.qcow2"),
            "1M",
        ]);
        let h = read_header(Path::new(&p("v3.qcow2"))).unwrap();
        assert_eq!(h.backing_file.as_deref(), Some("/etc/shadow"));
        assert_eq!(h.backing_format.as_deref(), Some("raw"));

        std::fs::write(p("base.img"), vec![0u8; 1 << 20]).unwrap();
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "-b",
            "base.img",
            "-F",
            "raw",
            &p("v2.qcow2"),
            "1M",
        ]);
        let h = read_header(Path::new(&p("v2.qcow2"))).unwrap();
        assert_eq!(h.backing_file.as_deref(), Some("base.img"));

        std::fs::write(p("data.raw"), vec![0u8; 1 << 20]).unwrap();
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", p("data.raw")),
            &p("ext.qcow2"),
            "1M",
        ]);
        let h = read_header(Path::new(&p("ext.qcow2"))).unwrap();
        assert_eq!(h.data_file, Some(p("data.raw")));

        assert!(parse(b"QFI\xfb\0\0\0\x09").is_err());
        assert!(parse(b"QFI").is_err());
        assert!(parse(&[0u8; 512]).is_err());
    }
}
