//! `yun build -f Containerfile -t NAME DIR`: FROM, RUN (in a real container through the
//! runtime), COPY/ADD, and the config instructions, with a layer cache.
//!
//! Cache: every step has a key = sha256(previous key, instruction text, and for COPY the
//! content hash of its sources; for RUN the environment it sees). A layer-making step whose
//! key is in `DATA/build-cache/` reuses the recorded layer; the finished image is cached by
//! the last key too, so an unchanged rebuild writes no blob and makes no image.

mod layer;
pub mod parse;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::image::{Config as ImageConfig, ImageConfiguration};
use sha2::{Digest as _, Sha256};
use yun_image::{Digest, Image};

use crate::spec::{self, RunOptions};
use crate::Engine;
use parse::{Instruction, Step};

/// `yun build` options.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub containerfile: PathBuf,
    pub context: PathBuf,
    pub tags: Vec<String>,
    pub build_args: HashMap<String, String>,
    /// Ignore the cache.
    pub no_cache: bool,
}

/// What has been built so far.
#[derive(Clone)]
struct State {
    layers: Vec<(String, u64)>,
    config: ImageConfiguration,
    key: String,
}

/// A finished stage of a multi-stage build, for `FROM stage` and `COPY --from=stage`.
struct Stage {
    alias: Option<String>,
    state: State,
}

/// The stage `name` refers to: its `AS` alias (case-insensitive) or its index.
fn find_stage<'a>(stages: &'a [Stage], name: &str) -> Option<&'a Stage> {
    if let Ok(index) = name.parse::<usize>() {
        return stages.get(index);
    }
    let name = name.to_ascii_lowercase();
    stages
        .iter()
        .find(|s| s.alias.as_deref() == Some(name.as_str()))
}

const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

impl Engine {
    /// Build and tag an image; progress lines go to `out`. Returns the image.
    pub fn build(&self, opts: &BuildOptions, out: &mut dyn Write) -> Result<Image> {
        let src = fs::read_to_string(&opts.containerfile)
            .with_context(|| format!("-f {}", opts.containerfile.display()))?;
        let steps = parse::parse(&src, &opts.build_args)
            .with_context(|| opts.containerfile.display().to_string())?;
        if !opts.context.is_dir() {
            bail!("build context {}: not a directory", opts.context.display());
        }
        let cache = self.data_dir.join("build-cache");
        fs::create_dir_all(&cache)?;
        // Layers and intermediate images are stored before the final image names them:
        // keep gc (`yun prune`) away until the build is done.
        let _ingest = self.images.ingest_lock()?;
        let mut stages: Vec<Stage> = Vec::new();
        let mut state: Option<State> = None;
        let mut alias: Option<String> = None;
        let total = steps.len();
        for (n, step) in steps.iter().enumerate() {
            writeln!(out, "STEP {}/{total}: {}", n + 1, step.text)?;
            let result = match (&step.instruction, state.as_mut()) {
                (Instruction::Arg { .. }, _) => Ok(()),
                (Instruction::From { image, alias: name }, _) => {
                    if let Some(finished) = state.take() {
                        stages.push(Stage {
                            alias: alias.take(),
                            state: finished,
                        });
                    }
                    state = Some(match find_stage(&stages, image) {
                        Some(stage) => stage.state.clone(),
                        None => self.from(image)?,
                    });
                    alias = name.clone();
                    Ok(())
                }
                (_, None) => Err(anyhow!("no FROM before this step")),
                (_, Some(st)) => self.step(st, step, opts, &cache, &stages, out),
            };
            result.with_context(|| {
                format!(
                    "{}:{}: {}",
                    opts.containerfile.display(),
                    step.line,
                    step.text
                )
            })?;
        }
        let st = state.ok_or_else(|| anyhow!("no FROM instruction"))?;
        let image = self.commit(&st, &opts.tags)?;
        writeln!(out, "COMMIT {} {}", opts.tags.join(" "), image.id)?;
        Ok(image)
    }

    fn from(&self, reference: &str) -> Result<State> {
        if reference == "scratch" {
            let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
                "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}
            }))?;
            return Ok(State {
                layers: Vec::new(),
                config,
                key: hash(&["scratch"]),
            });
        }
        let image = self.image(reference)?;
        let config = self.images.image_config(&image)?;
        let layers = self.manifest_layers(&image)?;
        Ok(State {
            layers,
            config,
            key: hash(&["from", image.id.as_ref()]),
        })
    }

    /// (digest, size) of an image's layers, from its manifest.
    fn manifest_layers(&self, image: &Image) -> Result<Vec<(String, u64)>> {
        let f = self.images.open_blob(&image.manifest_digest)?;
        let m: serde_json::Value = serde_json::from_reader(f)?;
        m["layers"]
            .as_array()
            .ok_or_else(|| anyhow!("manifest {} has no layers", image.manifest_digest))?
            .iter()
            .map(|l| {
                Ok((
                    l["digest"]
                        .as_str()
                        .ok_or_else(|| anyhow!("layer without digest"))?
                        .to_string(),
                    l["size"].as_u64().unwrap_or(0),
                ))
            })
            .collect()
    }

    fn step(
        &self,
        st: &mut State,
        step: &Step,
        opts: &BuildOptions,
        cache: &Path,
        stages: &[Stage],
        out: &mut dyn Write,
    ) -> Result<()> {
        let mut cfg: ImageConfig = st.config.config().clone().unwrap_or_default();
        match &step.instruction {
            Instruction::Run { command } => {
                let env = cfg.env().clone().unwrap_or_default().join("\n");
                let key = hash(&[
                    &st.key,
                    &step.text,
                    &env,
                    cfg.user().as_deref().unwrap_or(""),
                    cfg.working_dir().as_deref().unwrap_or(""),
                ]);
                if !opts.no_cache && self.cached_layer(st, cache, &key, out)? {
                    return Ok(());
                }
                let layer = self.run_step(st, &command.argv(), out)?;
                self.add_layer(st, cache, key, layer)?;
            }
            Instruction::Copy {
                sources,
                dest,
                chown,
                from,
                add,
            } => {
                if *add {
                    for s in sources {
                        if s.contains("://") {
                            bail!("ADD {s}: remote sources are not supported (yun builds offline)");
                        }
                    }
                }
                // Where the sources come from, and what identifies their content for the cache.
                let source_image = match from {
                    None => None,
                    Some(from) => Some(match find_stage(stages, from) {
                        Some(stage) => self.commit(&stage.state, &[])?,
                        None => self
                            .image(from)
                            .with_context(|| format!("--from={from}: no such stage or image"))?,
                    }),
                };
                let content = match &source_image {
                    None => layer::content_hash(&opts.context, sources)?,
                    Some(image) => image.id.to_string(),
                };
                let key = hash(&[&st.key, &step.text, &content]);
                if !opts.no_cache && self.cached_layer(st, cache, &key, out)? {
                    return Ok(());
                }
                let owner = chown
                    .as_deref()
                    .map(|c| self.copy_owner(st, c))
                    .transpose()?;
                let workdir = cfg.working_dir().clone().unwrap_or_else(|| "/".into());
                let dest = if dest.starts_with('/') {
                    dest.clone()
                } else {
                    format!("{}/{dest}", workdir.trim_end_matches('/'))
                };
                let write = |context: &Path| {
                    self.images.put_blob_with(|w| {
                        layer::from_sources(context, sources, &dest, owner, *add, w)
                    })
                };
                let (digest, size) = match &source_image {
                    None => write(&opts.context)?,
                    Some(image) => self.with_rootfs(image, write)?,
                };
                self.add_layer(st, cache, key, (digest.to_string(), size))?;
            }
            other => {
                apply_config(&mut cfg, other)?;
                st.config.set_config(Some(cfg));
                st.key = hash(&[&st.key, &step.text]);
            }
        }
        Ok(())
    }

    /// A cache hit: reuse the recorded layer if its blob is still in the store.
    fn cached_layer(
        &self,
        st: &mut State,
        cache: &Path,
        key: &str,
        out: &mut dyn Write,
    ) -> Result<bool> {
        let Ok(rec) = fs::read_to_string(cache.join(key)) else {
            return Ok(false);
        };
        let Some((digest, size)) = rec.trim().split_once(' ') else {
            return Ok(false);
        };
        let d: Digest = digest.parse()?;
        if !self.images.has_blob(&d) {
            return Ok(false);
        }
        writeln!(out, "--> Using cache {digest}")?;
        self.push_layer(st, digest.to_string(), size.parse()?);
        st.key = key.to_string();
        Ok(true)
    }

    fn add_layer(
        &self,
        st: &mut State,
        cache: &Path,
        key: String,
        (digest, size): (String, u64),
    ) -> Result<()> {
        write_atomic(&cache.join(&key), format!("{digest} {size}").as_bytes())?;
        self.push_layer(st, digest, size);
        st.key = key;
        Ok(())
    }

    fn push_layer(&self, st: &mut State, digest: String, size: u64) {
        st.layers.push((digest.clone(), size));
        let mut rootfs = st.config.rootfs().clone();
        let mut ids = rootfs.diff_ids().clone();
        ids.push(digest);
        rootfs.set_diff_ids(ids);
        st.config.set_rootfs(rootfs);
    }

    /// RUN: a container from the image so far; its overlay upper dir becomes the new layer.
    fn run_step(&self, st: &State, argv: &[String], out: &mut dyn Write) -> Result<(String, u64)> {
        let base = self.commit(st, &[])?;
        let key = format!("build-{}", &crate::random_id()?[..16]);
        let rootfs = self.images.prepare_rootfs(&key, &base)?;
        let result = (|| -> Result<(String, u64)> {
            let cfg = st.config.config().clone().unwrap_or_default();
            let opts = RunOptions {
                command: argv.to_vec(),
                entrypoint: Some(String::new()),
                ..Default::default()
            };
            let dir = self.data_dir.join("build-cache").join(&key);
            fs::create_dir_all(&dir)?;
            let files = spec::Generated::write(&dir, "yun-build", &[])?;
            let spec = spec::generate(&spec::Input {
                image: &cfg,
                opts: &opts,
                rootfs: &rootfs.path,
                hostname: "yun-build",
                files: &files,
                volumes_dir: &self.data_dir.join("volumes"),
            })?;
            let bundle = dir.join("bundle");
            fs::create_dir_all(&bundle)?;
            yun_runtime::bundle::write_config(&bundle, &spec)?;
            out.flush()?;
            let code =
                self.runtime
                    .run(&key, &bundle, &yun_runtime::CreateOptions::default(), false)?;
            if code != 0 {
                bail!("exited with {code}");
            }
            let (digest, size) = self.images.put_layer_from_dir(&rootfs.upper)?;
            Ok((digest.to_string(), size))
        })();
        let _ = self.images.remove_rootfs(&key);
        let _ = fs::remove_dir_all(self.data_dir.join("build-cache").join(&key));
        result
    }

    /// Run `f` on a read-only view of `image`'s root filesystem (an overlay, removed after).
    fn with_rootfs<T>(&self, image: &Image, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let key = format!("build-{}", &crate::random_id()?[..16]);
        let rootfs = self.images.prepare_rootfs(&key, image)?;
        let result = f(&rootfs.path);
        let _ = self.images.remove_rootfs(&key);
        result
    }

    /// `--chown=USER[:GROUP]`: numbers as they are; names looked up in the image built so far
    /// (its /etc/passwd and /etc/group). Without a group, the GID is the UID, as in Docker.
    fn copy_owner(&self, st: &State, chown: &str) -> Result<(u32, u32)> {
        if let Some(ids) = numeric_chown(chown) {
            return Ok(ids);
        }
        let image = self.commit(st, &[])?;
        let (uid, gid, _) = self
            .with_rootfs(&image, |root| spec::resolve_user(root, chown))
            .with_context(|| format!("--chown={chown}"))?;
        Ok((uid, if chown.contains(':') { gid } else { uid }))
    }

    /// Write config + manifest and record the image (with `names`). The same state always
    /// gives the same bytes (no timestamps), so a cached rebuild adds nothing.
    fn commit(&self, st: &State, names: &[String]) -> Result<Image> {
        let config = serde_json::to_vec(&st.config)?;
        let config_digest = self.images.put_blob(&config[..], None)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": st.layers.iter().map(|(d, s)| serde_json::json!({"mediaType": LAYER_TYPE, "digest": d, "size": s})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest)?;
        self.images.put_blob(&bytes[..], None)?;
        self.images.add_image(&bytes, names)
    }
}

fn apply_config(cfg: &mut ImageConfig, ins: &Instruction) -> Result<()> {
    match ins {
        Instruction::Env { vars } => {
            let mut env = cfg.env().clone().unwrap_or_default();
            for (k, v) in vars {
                env.retain(|e| e.split('=').next() != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
            cfg.set_env(Some(env));
        }
        Instruction::Workdir { path } => {
            let base = cfg.working_dir().clone().unwrap_or_else(|| "/".into());
            let p = if path.starts_with('/') {
                path.clone()
            } else {
                format!("{}/{path}", base.trim_end_matches('/'))
            };
            cfg.set_working_dir(Some(p));
        }
        Instruction::User { user } => {
            cfg.set_user(Some(user.clone()));
        }
        Instruction::Cmd { command } => {
            cfg.set_cmd(Some(command.argv()));
        }
        Instruction::Entrypoint { command } => {
            cfg.set_entrypoint(Some(command.argv()));
            // Docker: a new ENTRYPOINT resets an inherited CMD.
            cfg.set_cmd(None);
        }
        Instruction::Expose { ports } => {
            let mut p = cfg.exposed_ports().clone().unwrap_or_default();
            for port in ports {
                let port = if port.contains('/') {
                    port.clone()
                } else {
                    format!("{port}/tcp")
                };
                if !p.contains(&port) {
                    p.push(port);
                }
            }
            cfg.set_exposed_ports(Some(p));
        }
        Instruction::Label { labels } => {
            let mut l = cfg.labels().clone().unwrap_or_default();
            for (k, v) in labels {
                l.insert(k.clone(), v.clone());
            }
            cfg.set_labels(Some(l));
        }
        Instruction::Volume { paths } => {
            let mut v = cfg.volumes().clone().unwrap_or_default();
            for p in paths {
                if !v.contains(p) {
                    v.push(p.clone());
                }
            }
            cfg.set_volumes(Some(v));
        }
        other => bail!("not a config instruction: {other:?}"),
    }
    Ok(())
}

fn numeric_chown(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some((u.parse().ok()?, g.parse().ok()?))
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)?;
    Ok(())
}
