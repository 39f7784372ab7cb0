//! Debian's stock cloud kernel, fetched with apt and unpacked once under `data_dir/vm/kernels/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use crate::lz4;

/// The metapackage that always points at the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked guest kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    /// The bzImage as Debian ships it.
    pub vmlinuz: PathBuf,
    /// The uncompressed ELF vmlinux (PVH-bootable), when it could be extracted.
    pub vmlinux: Option<PathBuf>,
    /// `lib/modules/<version>` of the package.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// Describe an unpacked kernel directory (`<root>/vmlinuz`, `vmlinux`, `modules/`).
    fn from_dir(version: &str, dir: &Path) -> Kernel {
        let vmlinux = dir.join("vmlinux");
        Kernel {
            version: version.to_string(),
            vmlinuz: dir.join("vmlinuz"),
            vmlinux: vmlinux.is_file().then_some(vmlinux),
            modules_dir: dir.join("modules"),
        }
    }
}

/// Fetch `linux-image-cloud-amd64` (metapackage + the versioned image it depends on) and unpack it
/// into `data_dir/vm/kernels/<version>/` once; later calls return the unpacked copy.
pub fn ensure_kernel(data_dir: &Path) -> Result<Kernel> {
    let kernels = data_dir.join("vm").join("kernels");
    fs::create_dir_all(&kernels).with_context(|| format!("create {}", kernels.display()))?;
    // Once unpacked, a kernel is used as is: asking apt (even apt-cache, ~1 s) would dominate a
    // 2 s VM run. The newest unpacked version wins; upgrading is an explicit, later step.
    if let Some(k) = newest_unpacked(&kernels)? {
        return Ok(k);
    }
    let tmp = tempdir_in(&kernels, ".tmp-kernel")?;
    let result = fetch_into(&tmp, &kernels);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn fetch_into(tmp: &Path, kernels: &Path) -> Result<Kernel> {
    apt_download(KERNEL_METAPACKAGE, tmp)?;
    let meta = find_deb(tmp, KERNEL_METAPACKAGE)?;
    let depends = dpkg_field(&meta, "Depends")?;
    let pkg = depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-") && *d != KERNEL_METAPACKAGE)
        .ok_or_else(|| anyhow!("{KERNEL_METAPACKAGE}: no linux-image-* in Depends: {depends}"))?
        .to_string();
    let version = pkg.trim_start_matches("linux-image-").to_string();
    let dir = kernels.join(&version);
    if dir.join("vmlinuz").is_file() {
        return Ok(Kernel::from_dir(&version, &dir));
    }
    apt_download(&pkg, tmp)?;
    let deb = find_deb(tmp, &pkg)?;
    let root = tmp.join("root");
    run_tool(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&root),
        &format!("dpkg -x {pkg}"),
    )?;

    let stage = tmp.join("stage");
    fs::create_dir_all(&stage)?;
    let vmlinuz_src = root.join("boot").join(format!("vmlinuz-{version}"));
    fs::rename(&vmlinuz_src, stage.join("vmlinuz"))
        .with_context(|| format!("{pkg}: missing {}", vmlinuz_src.display()))?;
    let modules_src = root.join("lib/modules").join(&version);
    fs::rename(&modules_src, stage.join("modules"))
        .with_context(|| format!("{pkg}: missing {}", modules_src.display()))?;
    match extract_vmlinux(&fs::read(stage.join("vmlinuz"))?) {
        Ok(elf) => write_synced(&stage.join("vmlinux"), &elf)?,
        Err(e) => tracing::warn!("{pkg}: no uncompressed vmlinux: {e:#}"),
    }
    match fs::rename(&stage, &dir) {
        Ok(()) => {}
        // Another process won the race; its copy is as good as ours.
        Err(_) if dir.join("vmlinuz").is_file() => {}
        Err(e) => return Err(e).with_context(|| format!("rename into {}", dir.display())),
    }
    Ok(Kernel::from_dir(&version, &dir))
}

/// Find the lz4 payload inside a bzImage and decode it to the ELF vmlinux.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    let mut from = 0;
    while let Some(at) = find(&bzimage[from..], &lz4::LEGACY_MAGIC) {
        let start = from + at;
        if let Ok(elf) = lz4::decompress_legacy(&bzimage[start..]) {
            if elf.starts_with(b"\x7fELF") {
                return Ok(elf);
            }
        }
        from = start + 1;
    }
    bail!("no lz4-compressed ELF payload found")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn newest_unpacked(kernels: &Path) -> Result<Option<Kernel>> {
    let mut found: Vec<String> = fs::read_dir(kernels)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && kernels.join(n).join("vmlinuz").is_file())
        .collect();
    found.sort();
    Ok(found.pop().map(|v| Kernel::from_dir(&v, &kernels.join(&v))))
}

fn apt_download(pkg: &str, dir: &Path) -> Result<()> {
    let out = Command::new("apt-get")
        .args(["download", "-q", pkg])
        .current_dir(dir)
        .output()
        .with_context(|| format!("apt-get download {pkg}: cannot run apt-get"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rfind(|l| l.starts_with("E:"))
            .unwrap_or(err.trim());
        bail!("apt-get download {pkg} failed: {last}");
    }
    Ok(())
}

fn find_deb(dir: &Path, pkg: &str) -> Result<PathBuf> {
    let prefix = format!("{pkg}_");
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "apt-get download {pkg}: no {pkg}_*.deb in {}",
        dir.display()
    )
}

fn dpkg_field(deb: &Path, field: &str) -> Result<String> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()?;
    if !out.status.success() {
        bail!("dpkg-deb -f {} {field} failed", deb.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot run"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A fresh, uniquely named directory under `parent` (removed by the caller).
pub(crate) fn tempdir_in(parent: &Path, prefix: &str) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = parent.join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Write a file in full and fsync it (callers rename it into place).
pub(crate) fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}
