//! Image archives as podman reads and writes them: OCI layout directories, OCI archives (a
//! tar of a layout) and docker-archives (`podman save`'s default: manifest.json, config and
//! uncompressed layer tars).

mod load;
mod save;

use std::str::FromStr;

/// The formats of `yun save` (podman's `--format` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArchiveFormat {
    /// `docker-archive`: what `podman save` writes by default.
    DockerArchive,
    /// `oci-archive`: a tar of an OCI image layout.
    OciArchive,
    /// `oci-dir`: an OCI image layout directory.
    OciDir,
}

impl FromStr for ArchiveFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<ArchiveFormat> {
        match s {
            "docker-archive" => Ok(ArchiveFormat::DockerArchive),
            "oci-archive" => Ok(ArchiveFormat::OciArchive),
            "oci-dir" => Ok(ArchiveFormat::OciDir),
            _ => anyhow::bail!("--format {s:?}: expected docker-archive, oci-archive or oci-dir"),
        }
    }
}

impl std::fmt::Display for ArchiveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ArchiveFormat::DockerArchive => "docker-archive",
            ArchiveFormat::OciArchive => "oci-archive",
            ArchiveFormat::OciDir => "oci-dir",
        })
    }
}

/// Annotation names of image names in OCI indexes.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

#[cfg(test)]
mod tests {
    use super::ArchiveFormat;

    #[test]
    fn format_names_are_podmans() {
        for f in [
            ArchiveFormat::DockerArchive,
            ArchiveFormat::OciArchive,
            ArchiveFormat::OciDir,
        ] {
            assert_eq!(f.to_string().parse::<ArchiveFormat>().unwrap(), f);
        }
        assert!("tar".parse::<ArchiveFormat>().is_err());
    }
}
