//! The five capability sets of `process.capabilities`.

use std::str::FromStr;

use anyhow::{anyhow, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

fn to_set(list: &Option<Capabilities>) -> Result<CapsHashSet> {
    list.iter()
        .flatten()
        .map(|c| {
            let name = format!("CAP_{c}");
            Capability::from_str(&name).map_err(|_| anyhow!("unknown capability {name}"))
        })
        .collect()
}

/// The sets the container process should end up with. `None` in the config means none.
#[derive(Debug, Clone, Default)]
pub struct Sets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl Sets {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> Result<Sets> {
        let Some(c) = c else {
            return Ok(Sets::default());
        };
        Ok(Sets {
            bounding: to_set(c.bounding()).context("capabilities.bounding")?,
            effective: to_set(c.effective()).context("capabilities.effective")?,
            permitted: to_set(c.permitted()).context("capabilities.permitted")?,
            inheritable: to_set(c.inheritable()).context("capabilities.inheritable")?,
            ambient: to_set(c.ambient()).context("capabilities.ambient")?,
        })
    }
}

/// Drop from the bounding set everything not asked for (needs CAP_SETPCAP: do it while the
/// process is still root).
pub fn drop_bounding(sets: &Sets) -> Result<()> {
    for cap in caps::runtime::thread_all_supported() {
        if !sets.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("drop {cap} from the bounding set"))?;
        }
    }
    Ok(())
}

/// Set effective, permitted and inheritable, then raise the ambient ones (after the uid
/// change, which keeps permitted thanks to PR_SET_KEEPCAPS but clears effective).
pub fn apply(sets: &Sets) -> Result<()> {
    // Effective must stay a subset of permitted at every step: shrink effective first.
    caps::set(
        None,
        CapSet::Effective,
        &sets
            .effective
            .intersection(&sets.permitted)
            .cloned()
            .collect(),
    )
    .context("set effective capabilities")?;
    caps::set(None, CapSet::Inheritable, &sets.inheritable)
        .context("set inheritable capabilities")?;
    caps::set(None, CapSet::Permitted, &sets.permitted).context("set permitted capabilities")?;
    caps::set(None, CapSet::Effective, &sets.effective).context("set effective capabilities")?;
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).context("clear ambient capabilities")?;
        for cap in &sets.ambient {
            // The kernel refuses an ambient capability missing from permitted or inheritable;
            // runc skips those with a warning, so do we.
            if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
                tracing::warn!("cannot raise ambient {cap}: {e}");
            }
        }
    }
    Ok(())
}
