//! The engine's images, for the agent: which it holds (and their layers' diff ids, which name
//! what the archives shared through the mesh contain), loading an archive (`docker load`), and
//! pulling from a registry, which the agent asks for only when the node's owner allows that
//! registry.

use std::{path::Path, time::Duration};

use bollard::{
    body_try_stream,
    query_parameters::{
        CreateImageOptionsBuilder, ImportImageOptionsBuilder, ListImagesOptionsBuilder,
    },
};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::{DockerDriver, engine_error, is_not_found};
use crate::RuntimeError;

/// How long the engine may take to load an archive before it answers (the default of two
/// minutes is short for a large image on a slow disk).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a pull may take, all layers included: long enough for a large image on a slow link,
/// short enough that a stalled registry does not hold an instance's start for ever.
const PULL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How much of an archive is read and sent at a time.
const CHUNK: usize = 256 * 1024;

/// One image the engine holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineImage {
    /// `sha256:<hex>`: the digest of the image's config.
    pub id: String,
    /// `name:tag` references, if any.
    pub tags: Vec<String>,
    /// `RootFS.Layers`: the `sha256:<hex>` digests of its uncompressed layers, base first.
    pub diff_ids: Vec<String>,
}

impl DockerDriver {
    /// Every image the engine holds, with its layers' diff ids.
    pub async fn image_diff_ids(&self) -> Result<Vec<EngineImage>, RuntimeError> {
        let docker = &self.inner.docker;
        let options = ListImagesOptionsBuilder::default().all(false).build();
        let summaries = docker
            .list_images(Some(options))
            .await
            .map_err(|e| engine_error("listing the engine's images", e))?;
        let mut images = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let inspect = match docker.inspect_image(&summary.id).await {
                Ok(inspect) => inspect,
                // Removed since it was listed.
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(engine_error(format!("inspecting image {}", summary.id), e)),
            };
            images.push(EngineImage {
                diff_ids: inspect.root_fs.and_then(|r| r.layers).unwrap_or_default(),
                tags: summary
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                id: summary.id,
            });
        }
        Ok(images)
    }

    /// Whether the engine holds the image with this id (`sha256:…`) or `name:tag`.
    pub async fn has_image(&self, id_or_name: &str) -> Result<bool, RuntimeError> {
        match self.inner.docker.inspect_image(id_or_name).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(engine_error(format!("looking up image {id_or_name}"), e)),
        }
    }

    /// Pulls `reference` (`name:tag`, as `normalize_image_name` writes it) from its registry,
    /// anonymously. The caller decides whether that registry may be used; this only pulls.
    pub async fn pull_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let context = || format!("pulling image {reference}");
        // Name and tag apart: a name without a tag would pull every tag of the repository.
        let (name, tag) = match reference.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (reference, "latest"),
        };
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let docker = self.inner.docker.clone().with_timeout(PULL_TIMEOUT);
        let pull = async {
            let mut progress = docker.create_image(Some(options), None, None);
            // The engine reports a failed pull (unknown image, refused credentials) as a message
            // in the progress stream, which bollard turns into an error here.
            while let Some(message) = progress.next().await {
                message.map_err(|e| engine_error(context(), e))?;
            }
            Ok(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(pulled) => pulled?,
            Err(_) => {
                return Err(RuntimeError::Engine {
                    context: context(),
                    reason: format!("not done within {PULL_TIMEOUT:?}"),
                });
            }
        }
        if !self.has_image(reference).await? {
            return Err(RuntimeError::Engine {
                context: context(),
                reason: "the pull ended but the engine holds no such image".to_owned(),
            });
        }
        Ok(())
    }

    /// Loads a `docker save` (or OCI) archive into the engine, streamed from the file, and
    /// returns what the engine says it loaded (`name:tag`, or `sha256:…` for untagged images).
    pub async fn load_archive(&self, path: &Path) -> Result<Vec<String>, RuntimeError> {
        let context = || format!("loading image archive {}", path.display());
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| RuntimeError::io(context(), e))?;
        let chunks = futures::stream::try_unfold(file, |mut file| async move {
            let mut buffer = BytesMut::with_capacity(CHUNK);
            let read = file.read_buf(&mut buffer).await?;
            Ok::<_, std::io::Error>((read > 0).then(|| (buffer.freeze(), file)))
        });
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let docker = self.inner.docker.clone().with_timeout(LOAD_TIMEOUT);
        let mut progress = docker.import_image(options, body_try_stream(chunks), None);
        let mut loaded = Vec::new();
        while let Some(message) = progress.next().await {
            let message = message.map_err(|e| engine_error(context(), e))?;
            let text = message.stream.unwrap_or_default();
            for line in text.lines() {
                if let Some(image) = line
                    .strip_prefix("Loaded image: ")
                    .or_else(|| line.strip_prefix("Loaded image ID: "))
                {
                    loaded.push(image.trim().to_owned());
                }
            }
        }
        Ok(loaded)
    }
}
