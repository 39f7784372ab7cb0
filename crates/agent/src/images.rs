//! Images for a pod's containers, per imagePullPolicy.

use k8s_openapi::api::core::v1::Container;
use yun_engine::Engine;

/// Make `image` available for `c`, or say why not with the reason Kubernetes reports
/// (ErrImagePull, ErrImageNeverPull). The default policy is Always for `:latest` or untagged
/// images and IfNotPresent otherwise. Offline-friendly: when a pull under `Always` fails but
/// the image is already here, the local copy is used; the built-in busybox is never pulled.
pub fn ensure(
    engine: &Engine,
    c: &Container,
    image: &str,
) -> Result<(), (&'static str, anyhow::Error)> {
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
        _ if builtin => local.map(drop).map_err(|e| ("ErrImagePull", e)),
        "Never" => local.map(drop).map_err(|e| {
            (
                "ErrImageNeverPull",
                e.context(format!(
                    "image {image:?} is not present with pull policy Never"
                )),
            )
        }),
        "IfNotPresent" if local.is_ok() => Ok(()),
        _ => match engine.pull(image, &Default::default()) {
            Ok(_) => Ok(()),
            Err(_) if policy == "Always" && local.is_ok() => Ok(()),
            Err(e) => Err(("ErrImagePull", e)),
        },
    }
}
