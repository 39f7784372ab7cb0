//! Images for a pod's containers, per imagePullPolicy.

use k8s_openapi::api::core::v1::Container;
use yun_engine::Engine;

/// Where a container's image came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already on the node: no pull was needed (or a failed pull fell back to it).
    Present,
    /// Pulled now, in this long.
    Pulled(std::time::Duration),
}

/// Make `image` available for `c`, or say why not with the reason Kubernetes reports
/// (ErrImagePull, ErrImageNeverPull). `pulling` is called just before a pull starts. The default policy is Always for `:latest` or untagged
/// images and IfNotPresent otherwise. Offline-friendly: when a pull under `Always` fails but
/// the image is already here, the local copy is used; the built-in busybox is never pulled.
pub fn ensure(
    engine: &Engine,
    c: &Container,
    image: &str,
    pulling: impl FnOnce(),
) -> Result<Source, (&'static str, anyhow::Error)> {
    let builtin = matches!(image, "busybox" | "busybox:latest");
    let tag_latest =
        !image.rsplit('/').next().unwrap_or(image).contains(':') || image.ends_with(":latest");
    let policy = c.image_pull_policy.as_deref().unwrap_or(if tag_latest {
        "Always"
    } else {
        "IfNotPresent"
    });
    let local = engine.image(image);
    match policy {
        _ if builtin => local
            .map(|_| Source::Present)
            .map_err(|e| ("ErrImagePull", e)),
        "Never" => local.map(|_| Source::Present).map_err(|e| {
            (
                "ErrImageNeverPull",
                e.context(format!(
                    "image {image:?} is not present with pull policy Never"
                )),
            )
        }),
        "IfNotPresent" if local.is_ok() => Ok(Source::Present),
        _ => {
            pulling();
            let started = std::time::Instant::now();
            match engine.pull(image, &Default::default()) {
                Ok(_) => Ok(Source::Pulled(started.elapsed())),
                Err(_) if policy == "Always" && local.is_ok() => Ok(Source::Present),
                Err(e) => Err(("ErrImagePull", e)),
            }
        }
    }
}
