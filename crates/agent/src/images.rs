//! Container images for the agent: turns a container app's `[container]` section into an image
//! the local Docker engine holds, fetching from peers only the layers the engine lacks, and into
//! the hardening it runs with (each relaxation checked against this node's owner policy).
//!
//! ```text
//!  archive = "blake3:…" ──fetch blob──▶ an image record (JSON) ─┐   or a raw archive: imported here
//!  image = "name:tag" ──placement state's images──────────────────┤
//!                     ├─ not in the mesh: the engine's own image ─┼─▶ engine has config digest? done
//!                     └─ nor in the engine: a pull, only from a   └─▶ fetch config + missing layers,
//!                        registry in the policy's `registries`        write a loadable archive,
//!                                                                     docker load, check the id
//! ```

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use mycel_blobs::{BlobStore, MeshBlobs};
use mycel_images::{
    layers_held_by_engine, wrapped_tag, write_loadable_archive, write_wrapped_binary,
};
use mycel_protocol::{
    BlobHash, NodePolicy,
    app::{ContainerSpec, ProcessSpec, Relaxation},
    image::{ImageRecord, normalize_image_name, registry_host},
    placement::ImageEntry,
};
use mycel_runtime::{ContainerRelax, ContainerWorkload, DockerDriver};

use crate::AgentError;

/// The port a container app listens on when its manifest names none.
pub const DEFAULT_CONTAINER_PORT: u16 = 8080;
/// A blob this small may be an image record; anything larger is an archive.
const MAX_RECORD_BYTES: u64 = 4 << 20;

/// Loads images into the local engine, one at a time (two instances of one app starting
/// together load it once).
#[derive(Clone)]
pub(crate) struct ImageLoader {
    pub(crate) docker: DockerDriver,
    pub(crate) blobs: BlobStore,
    pub(crate) network: MeshBlobs,
    /// Where archives for `docker load` are written, then removed.
    pub(crate) scratch: PathBuf,
    pub(crate) loading: Arc<tokio::sync::Mutex<()>>,
    /// This node's owner policy: which relaxations and registries it allows.
    pub(crate) policy: NodePolicy,
}

impl ImageLoader {
    /// The workload for `spec`, its image loaded into the engine.
    pub(crate) async fn workload(
        &self,
        spec: &ContainerSpec,
        mesh_images: &BTreeMap<String, ImageEntry>,
    ) -> Result<ContainerWorkload, AgentError> {
        // Checked first: an app this node may not run costs it no image.
        let relax = container_relax(spec, &self.policy)?;
        let image = match (&spec.archive, &spec.image) {
            (Some(archive), _) => {
                let hash: BlobHash = archive.parse().map_err(|e| {
                    unrunnable(format!("container.archive is not a blob hash: {e}"))
                })?;
                let record = self.record_from_blob(hash).await?;
                self.ensure_loaded(&record).await?
            }
            (None, Some(reference)) => {
                let name = normalize_image_name(reference).map_err(AgentError::Unrunnable)?;
                match mesh_images.get(&name) {
                    Some(entry) => self.ensure_loaded(&entry.record).await?,
                    None if self.has_image(&name).await? => name,
                    None => {
                        let registry = allowed_registry(&name, &self.policy)?;
                        self.pull(&name, registry).await?;
                        name
                    }
                }
            }
            (None, None) => {
                return Err(unrunnable(
                    "[container] names neither image nor archive".to_owned(),
                ));
            }
        };
        Ok(ContainerWorkload {
            image,
            port: spec.port.unwrap_or(DEFAULT_CONTAINER_PORT),
            command: spec.command.clone(),
            relax,
            tcp_ports: Vec::new(),
        })
    }

    /// Pulls `name` from `registry` (already allowed), unless an instance starting alongside
    /// pulled it meanwhile.
    async fn pull(&self, name: &str, registry: &str) -> Result<(), AgentError> {
        let _one_at_a_time = self.loading.lock().await;
        if self.has_image(name).await? {
            return Ok(());
        }
        tracing::info!(image = %name, %registry, "pulling an image from an allowed registry");
        self.docker
            .pull_image(name)
            .await
            .map_err(|e| AgentError::Fetch(e.to_string()))
    }

    async fn has_image(&self, reference: &str) -> Result<bool, AgentError> {
        self.docker
            .has_image(reference)
            .await
            .map_err(|e| AgentError::Node(e.to_string()))
    }

    /// The record a blob holds: an image record pushed through `POST /v1/images`, or a raw
    /// archive uploaded as a blob, which is imported here (checked as untrusted input).
    async fn record_from_blob(&self, hash: BlobHash) -> Result<ImageRecord, AgentError> {
        self.fetch(hash).await?;
        let path = self.blob_path(&hash)?;
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| AgentError::Node(format!("reading {hash}: {e}")))?
            .len();
        if size <= MAX_RECORD_BYTES {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| AgentError::Node(format!("reading {hash}: {e}")))?;
            if let Ok(record) = serde_json::from_slice::<ImageRecord>(&bytes) {
                return Ok(record);
            }
        }
        mycel_images::import_archive(&self.blobs, &path, None)
            .await
            .map(|imported| imported.record)
            .map_err(|e| unrunnable(format!("container.archive {hash}: {e}")))
    }

    /// Makes the engine hold `record`'s image; answers its id (the config's digest).
    async fn ensure_loaded(&self, record: &ImageRecord) -> Result<String, AgentError> {
        let _one_at_a_time = self.loading.lock().await;
        let id = record.image_id().to_owned();
        if self.has_image(&id).await? {
            return Ok(id);
        }
        let engine = self
            .docker
            .image_diff_ids()
            .await
            .map_err(|e| AgentError::Node(e.to_string()))?;
        let engine: Vec<Vec<String>> = engine.into_iter().map(|i| i.diff_ids).collect();
        let held = layers_held_by_engine(record, &engine);
        let needed = std::iter::once(&record.config)
            .chain(record.layers[held..].iter().map(|layer| &layer.part));
        let mut fetched = 0u64;
        for part in needed {
            self.fetch(part.hash).await?;
            fetched += part.size;
        }
        tracing::info!(
            image = %record.name,
            layers = record.layers.len(),
            held_by_engine = held,
            fetched_bytes = fetched,
            "loading an image into the engine"
        );

        let name = format!("load-{}.tar", id.trim_start_matches("sha256:"));
        let for_archive = record.clone();
        let blobs = self.blobs.clone();
        self.write_and_load(&name, move |out| {
            write_loadable_archive(
                &for_archive,
                held,
                |hash| blobs.blob_path(hash).ok().flatten(),
                out,
            )
            .map_err(|e| e.to_string())
        })
        .await?;
        if !self.has_image(&id).await? {
            return Err(AgentError::Node(format!(
                "the engine loaded {} but holds no image {id}",
                record.name
            )));
        }
        Ok(id)
    }

    /// The workload for a `[process]` app on this node's Docker: its binary (at `binary`, the
    /// blob `hash`) wrapped in a one-layer image of its own, loaded once per binary.
    pub(crate) async fn wrapped_binary(
        &self,
        binary: PathBuf,
        hash: BlobHash,
        spec: &ProcessSpec,
    ) -> Result<ContainerWorkload, AgentError> {
        let tag = wrapped_tag(&hash.to_hex());
        let _one_at_a_time = self.loading.lock().await;
        if !self.has_image(&tag).await? {
            let name = format!("wrap-{}.tar", hash.to_hex());
            let wrapped_as = tag.clone();
            self.write_and_load(&name, move |out| {
                let file = std::fs::File::open(&binary)
                    .map_err(|e| format!("opening {}: {e}", binary.display()))?;
                let size = file.metadata().map_err(|e| e.to_string())?.len();
                write_wrapped_binary(file, size, &wrapped_as, out).map_err(|e| e.to_string())
            })
            .await?;
            tracing::info!(image = %tag, "wrapped a process app's binary in an image");
        }
        Ok(ContainerWorkload {
            image: tag,
            port: spec.port(),
            command: spec.args.clone(),
            relax: ContainerRelax::default(),
            tcp_ports: Vec::new(),
        })
    }

    /// Writes an archive named `name` in the scratch directory with `write` (on a blocking
    /// thread), has the engine load it, and removes it.
    async fn write_and_load(
        &self,
        name: &str,
        write: impl FnOnce(std::io::BufWriter<std::fs::File>) -> Result<(), String> + Send + 'static,
    ) -> Result<(), AgentError> {
        tokio::fs::create_dir_all(&self.scratch)
            .await
            .map_err(|e| AgentError::Node(format!("creating {}: {e}", self.scratch.display())))?;
        let archive = self.scratch.join(name);
        let written = {
            let archive = archive.clone();
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::create(&archive)
                    .map_err(|e| format!("creating {}: {e}", archive.display()))?;
                write(std::io::BufWriter::new(file))
            })
            .await
            .map_err(|e| format!("writing the archive: {e}"))
            .and_then(|written| written)
            .map_err(AgentError::Node)
        };
        let loaded = match written {
            Ok(()) => self
                .docker
                .load_archive(&archive)
                .await
                .map(|_| ())
                .map_err(|e| AgentError::Node(e.to_string())),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&archive).await;
        loaded
    }

    async fn fetch(&self, hash: BlobHash) -> Result<(), AgentError> {
        mycel_blobs::fetch(&self.blobs, &self.network, hash)
            .await
            .map(|_| ())
            .map_err(|e| AgentError::Fetch(format!("fetching {hash}: {e}")))
    }

    fn blob_path(&self, hash: &BlobHash) -> Result<PathBuf, AgentError> {
        self.blobs
            .blob_path(hash)
            .map_err(|e| AgentError::Node(format!("reading the blob store: {e}")))?
            .ok_or_else(|| AgentError::Node(format!("{hash} vanished from the blob store")))
    }
}

/// The hardening `spec`'s container runs with: every relaxation it asks for, if this node's owner
/// allows them all. The scheduler places apps only where their relaxations are allowed; this
/// refuses anyway, since the placement may be older than the policy, or its leader mistaken.
fn container_relax(
    spec: &ContainerSpec,
    policy: &NodePolicy,
) -> Result<ContainerRelax, AgentError> {
    let refused: Vec<&str> = spec
        .relaxations()
        .into_iter()
        .filter(|r| !policy.allows(*r))
        .map(Relaxation::as_str)
        .collect();
    if !refused.is_empty() {
        return Err(AgentError::Refused(format!(
            "[container.relax] asks for {}, which this node's owner does not allow \
             (policy.container_relax)",
            refused.join(", ")
        )));
    }
    let Some(relax) = &spec.relax else {
        return Ok(ContainerRelax::default());
    };
    Ok(ContainerRelax {
        writable_root: relax.writable_root,
        run_as_root: relax.run_as_root,
        capabilities: relax.capabilities.clone(),
        new_privileges: !relax.no_new_privileges,
    })
}

/// The registry to pull `name` from, if this node's owner allows it; else why the image cannot
/// be had at all (it is neither in the mesh nor in the engine when this is asked).
fn allowed_registry<'a>(name: &'a str, policy: &NodePolicy) -> Result<&'a str, AgentError> {
    let registry = registry_host(name);
    if policy.allows_registry(registry) {
        return Ok(registry);
    }
    let allowed = match policy.registries.as_deref().unwrap_or_default() {
        [] => "allows none".to_owned(),
        hosts => format!("allows only {}", hosts.join(", ")),
    };
    Err(AgentError::Refused(format!(
        "image {name} was never pushed to the mesh, this node's Docker engine does not hold it, \
         and this node may not pull from its registry {registry} (policy.registries \
         {allowed}); push it with `mycel push`"
    )))
}

fn unrunnable(why: String) -> AgentError {
    AgentError::Unrunnable(why)
}

#[cfg(test)]
mod tests {
    use mycel_protocol::app::RelaxSpec;

    use super::*;

    fn policy(relax: &[&str], registries: &[&str]) -> NodePolicy {
        NodePolicy {
            container_relax: Some(relax.iter().map(|r| r.to_string()).collect()),
            registries: Some(registries.iter().map(|r| r.to_string()).collect()),
            ..NodePolicy::default()
        }
    }

    fn relaxed(relax: RelaxSpec) -> ContainerSpec {
        ContainerSpec {
            image: Some("web:1".into()),
            relax: Some(relax),
            ..ContainerSpec::default()
        }
    }

    #[test]
    fn relaxations_the_policy_does_not_allow_are_refused() {
        let hardened = ContainerSpec {
            image: Some("web:1".into()),
            ..ContainerSpec::default()
        };
        assert_eq!(
            container_relax(&hardened, &NodePolicy::default()).unwrap(),
            ContainerRelax::default()
        );
        let asks = relaxed(RelaxSpec {
            writable_root: true,
            capabilities: vec!["NET_BIND_SERVICE".into()],
            no_new_privileges: false,
            ..RelaxSpec::default()
        });
        let error = container_relax(&asks, &policy(&["writable_root"], &[]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "[container.relax] asks for capabilities, new_privileges, which this node's owner \
             does not allow (policy.container_relax)"
        );
        assert!(container_relax(&asks, &NodePolicy::default()).is_err());
        let allowed = container_relax(
            &asks,
            &policy(&["writable_root", "capabilities", "new_privileges"], &[]),
        );
        assert_eq!(
            allowed.unwrap(),
            ContainerRelax {
                writable_root: true,
                run_as_root: false,
                capabilities: vec!["NET_BIND_SERVICE".into()],
                new_privileges: true,
            }
        );
    }

    #[test]
    fn only_registries_on_the_allow_list_are_pulled_from() {
        // The default policy: no pull at all, and the error says how to get the image instead.
        let error = allowed_registry("nginx:1.27", &NodePolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("may not pull from its registry docker.io"),
            "{error}"
        );
        assert!(error.contains("policy.registries allows none"), "{error}");
        assert!(error.contains("mycel push"), "{error}");

        let some = policy(&[], &["ghcr.io", "localhost:5000"]);
        let error = allowed_registry("quay.io/team/app:v1", &some)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("its registry quay.io (")
                && error.contains("allows only ghcr.io, localhost:5000"),
            "{error}"
        );
        assert_eq!(
            allowed_registry("ghcr.io/team/app:v1", &some).unwrap(),
            "ghcr.io"
        );
        assert_eq!(
            allowed_registry("localhost:5000/app:latest", &some).unwrap(),
            "localhost:5000"
        );
        assert!(
            allowed_registry("team/app:v1", &some).is_err(),
            "Docker Hub"
        );
        assert_eq!(
            allowed_registry("team/app:v1", &policy(&[], &["docker.io"])).unwrap(),
            "docker.io"
        );
    }
}
