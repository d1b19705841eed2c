//! Container images for the agent: turns a container app's `[container]` section into an image
//! the local Docker engine holds, fetching from peers only the layers the engine lacks.
//!
//! ```text
//!  archive = "blake3:…" ──fetch blob──▶ an image record (JSON) ─┐   or a raw archive: imported here
//!  image = "name:tag" ──placement state's images──────────────────┤
//!                     └─ not in the mesh: the engine's own image ─┼─▶ engine has config digest? done
//!                                                                 └─▶ fetch config + missing layers,
//!                                                                     write a loadable archive,
//!                                                                     docker load, check the id
//! ```

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use mycel_blobs::{BlobStore, MeshBlobs};
use mycel_images::{layers_held_by_engine, write_loadable_archive};
use mycel_protocol::{
    BlobHash,
    app::ContainerSpec,
    image::{ImageRecord, normalize_image_name},
    placement::ImageEntry,
};
use mycel_runtime::{ContainerWorkload, DockerDriver};

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
}

impl ImageLoader {
    /// The workload for `spec`, its image loaded into the engine.
    pub(crate) async fn workload(
        &self,
        spec: &ContainerSpec,
        mesh_images: &BTreeMap<String, ImageEntry>,
    ) -> Result<ContainerWorkload, String> {
        let image = match (&spec.archive, &spec.image) {
            (Some(archive), _) => {
                let hash: BlobHash = archive
                    .parse()
                    .map_err(|e| format!("container.archive is not a blob hash: {e}"))?;
                let record = self.record_from_blob(hash).await?;
                self.ensure_loaded(&record).await?
            }
            (None, Some(reference)) => {
                let name = normalize_image_name(reference)?;
                match mesh_images.get(&name) {
                    Some(entry) => self.ensure_loaded(&entry.record).await?,
                    None if self.has_image(&name).await? => name,
                    None => {
                        return Err(format!(
                            "image {name} was never pushed to the mesh and this node's Docker \
                             engine does not hold it (push it with `mycel push`; mycel pulls \
                             from no registry)"
                        ));
                    }
                }
            }
            (None, None) => return Err("[container] names neither image nor archive".to_owned()),
        };
        Ok(ContainerWorkload {
            image,
            port: spec.port.unwrap_or(DEFAULT_CONTAINER_PORT),
            command: spec.command.clone(),
        })
    }

    async fn has_image(&self, reference: &str) -> Result<bool, String> {
        self.docker
            .has_image(reference)
            .await
            .map_err(|e| e.to_string())
    }

    /// The record a blob holds: an image record pushed through `POST /v1/images`, or a raw
    /// archive uploaded as a blob, which is imported here (checked as untrusted input).
    async fn record_from_blob(&self, hash: BlobHash) -> Result<ImageRecord, String> {
        self.fetch(hash).await?;
        let path = self.blob_path(&hash)?;
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("reading {hash}: {e}"))?
            .len();
        if size <= MAX_RECORD_BYTES {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| format!("reading {hash}: {e}"))?;
            if let Ok(record) = serde_json::from_slice::<ImageRecord>(&bytes) {
                return Ok(record);
            }
        }
        mycel_images::import_archive(&self.blobs, &path, None)
            .await
            .map(|imported| imported.record)
            .map_err(|e| format!("container.archive {hash}: {e}"))
    }

    /// Makes the engine hold `record`'s image; answers its id (the config's digest).
    async fn ensure_loaded(&self, record: &ImageRecord) -> Result<String, String> {
        let _one_at_a_time = self.loading.lock().await;
        let id = record.image_id().to_owned();
        if self.has_image(&id).await? {
            return Ok(id);
        }
        let engine = self
            .docker
            .image_diff_ids()
            .await
            .map_err(|e| e.to_string())?;
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

        tokio::fs::create_dir_all(&self.scratch)
            .await
            .map_err(|e| format!("creating {}: {e}", self.scratch.display()))?;
        let archive = self
            .scratch
            .join(format!("load-{}.tar", id.trim_start_matches("sha256:")));
        let written = {
            let record = record.clone();
            let blobs = self.blobs.clone();
            let archive = archive.clone();
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::create(&archive)
                    .map_err(|e| format!("creating {}: {e}", archive.display()))?;
                let out = std::io::BufWriter::new(file);
                write_loadable_archive(
                    &record,
                    held,
                    |hash| blobs.blob_path(hash).ok().flatten(),
                    out,
                )
                .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| format!("writing the archive: {e}"))?
        };
        let loaded = match written {
            Ok(()) => self
                .docker
                .load_archive(&archive)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&archive).await;
        loaded?;
        if !self.has_image(&id).await? {
            return Err(format!(
                "the engine loaded {} but holds no image {id}",
                record.name
            ));
        }
        Ok(id)
    }

    async fn fetch(&self, hash: BlobHash) -> Result<(), String> {
        mycel_blobs::fetch(&self.blobs, &self.network, hash)
            .await
            .map(|_| ())
            .map_err(|e| format!("fetching {hash}: {e}"))
    }

    fn blob_path(&self, hash: &BlobHash) -> Result<PathBuf, String> {
        self.blobs
            .blob_path(hash)
            .map_err(|e| format!("reading the blob store: {e}"))?
            .ok_or_else(|| format!("{hash} vanished from the blob store"))
    }
}
