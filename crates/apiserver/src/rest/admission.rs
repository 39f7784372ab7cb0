//! The admission of a new object around its defaulting, in kube-apiserver's order: the
//! namespace must exist, Priority admission resolves a pod's class (before defaulting, which
//! would fill the priority a user may not write), a second default PriorityClass is refused;
//! then LimitRanger and ServiceAccount admission see the defaulted pod. (ResourceQuota comes
//! after validation: write.rs.)

use serde_json::Value;

use crate::defaults::{self, Write};
use crate::error::ApiResult;
use crate::resources::Resource;
use crate::Api;

/// Admit `obj`, to be created as `name` in `ns`, and apply its defaults.
pub async fn defaulted(
    api: &Api,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    obj: &mut Value,
) -> ApiResult<()> {
    let pod_ns = match (ns, res.kind.as_str(), res.group.as_str()) {
        (Some(ns), "Pod", "") => Some(ns),
        _ => None,
    };
    if let Some(ns) = pod_ns {
        // The namespace first: a pod in a missing namespace is a 404, not a missing account.
        super::namespaces::admit_create(api, res, ns, name).await?;
        crate::priority::admit_pod(api, name, obj).await?;
    }
    if res.kind == "PriorityClass" && res.group == crate::priority::GROUP {
        crate::priority::admit_class(api, obj).await?;
    }
    if res.group.is_empty()
        && matches!(
            res.kind.as_str(),
            "PersistentVolumeClaim" | "PersistentVolume"
        )
    {
        crate::storage::admit_create(api, &res.kind, obj).await?;
    }
    defaults::apply(res, obj, Write::Create);
    if let Some(ns) = pod_ns {
        crate::limitrange::admit(api, ns, name, obj).await?;
        defaults::serviceaccount::admit(api, ns, name, obj).await?;
    }
    Ok(())
}

/// Admit an update or patch of `t` from `cur` to `out`, in kube's order: a claim may grow
/// only if its class allows it (PersistentVolumeClaimResize), then ResourceQuota charges
/// the change (unless `dry`). A status write is neither.
pub async fn admit_change(
    api: &Api,
    t: &crate::router::Target,
    cur: &Value,
    out: &Value,
    status: bool,
    dry: bool,
) -> ApiResult<()> {
    if !status && t.res.group.is_empty() && t.res.kind == "PersistentVolumeClaim" {
        crate::storage::admit_resize(api, cur, out).await?;
    }
    crate::resourcequota::admit_change(api, t, cur, out, status, dry).await
}
