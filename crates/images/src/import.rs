//! Importing an archive: pass 1 (the entry table and the JSON files, on a blocking thread), pass
//! 2 (stream each part once: hash it and copy it into an upload that is not yet visible), pass 3
//! (commit the uploads, then the record).

use std::{
    collections::HashMap,
    fs::File,
    io::{self, SeekFrom, Write},
    path::Path,
};

use flate2::write::MultiGzDecoder;
use mycel_blobs::{BlobHash, BlobStore, Upload};
use mycel_protocol::image::{ImageLayer, ImagePart, ImageRecord};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::{
    ImageError, docker, oci,
    plan::{Compression, LayerPlan, Plan},
    tree::{Span, Tree},
};

/// How much of a layer is read at once.
const CHUNK: usize = 256 * 1024;

/// An image stored in the blob store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub record: ImageRecord,
    /// The blob holding the record as JSON: the image's id in the mesh.
    pub record_hash: BlobHash,
}

/// Imports a `docker save` or OCI image-layout archive into `store`, checking it as untrusted
/// input. `name` (`name:tag`) overrides the name the archive gives. When any check fails, the
/// store holds nothing new; an I/O failure while committing may leave some parts stored (they
/// are harmless, content-addressed blobs that nothing names).
///
/// Dropping the future before pass 3 leaves nothing (uncommitted uploads remove themselves);
/// dropping it during pass 3 may leave some parts stored, but never a record naming them.
pub async fn import_archive(
    store: &BlobStore,
    archive: &Path,
    name: Option<&str>,
) -> Result<Imported, ImageError> {
    // Pass 1: headers and small JSON files only, with the synchronous tar reader.
    let plan = {
        let path = archive.to_path_buf();
        let name = name.map(str::to_owned);
        let max_blob_bytes = store.max_blob_bytes();
        tokio::task::spawn_blocking(move || {
            let mut file =
                std::fs::File::open(&path).map_err(ImageError::io("opening the archive"))?;
            let tree = Tree::read(&mut file)?;
            plan(&tree, &mut file, name.as_deref(), max_blob_bytes)
        })
        .await
        .map_err(|e| ImageError::Io {
            doing: "reading the archive",
            source: io::Error::other(e),
        })??
    };

    // Pass 2: every part verified and copied into an upload; nothing is visible yet.
    let mut config_upload = store.begin_upload().await?;
    config_upload.write(&plan.config).await?;
    let mut file = tokio::fs::File::open(archive)
        .await
        .map_err(ImageError::io("opening the archive"))?;
    // A layer that appears twice (the same bytes) is read and stored once.
    let mut streamed: HashMap<Span, Streamed> = HashMap::new();
    for (index, layer) in plan.layers.iter().enumerate() {
        if let Some(done) = streamed.get(&layer.span) {
            check_diff_id(index, &layer.diff_id, &done.diff_id)?;
            continue;
        }
        let done = stream_layer(store, &mut file, index, layer).await?;
        check_diff_id(index, &layer.diff_id, &done.diff_id)?;
        streamed.insert(layer.span, done);
    }

    // Pass 3: commit. From here on, failures are this node's (disk, index), not the archive's.
    let config = ImagePart {
        digest: plan.config_digest.clone(),
        hash: config_upload.finish(None).await?.hash,
        size: plan.config.len() as u64,
    };
    let mut committed: HashMap<Span, ImagePart> = HashMap::new();
    for (span, done) in streamed {
        let meta = done.upload.finish(None).await?;
        let part = ImagePart {
            digest: done.digest,
            hash: meta.hash,
            size: meta.size,
        };
        committed.insert(span, part);
    }
    let record = record(&plan, config, &committed)?;
    let json = serde_json::to_vec(&record).map_err(|e| ImageError::Io {
        doing: "encoding the image record",
        source: io::Error::other(e),
    })?;
    let mut upload = store.begin_upload().await?;
    upload.write(&json).await?;
    let record_hash = upload.finish(None).await?.hash;
    tracing::info!(name = %record.name, %record_hash, layers = record.layers.len(), "image imported");
    Ok(Imported {
        record,
        record_hash,
    })
}

fn record(
    plan: &Plan,
    config: ImagePart,
    committed: &HashMap<Span, ImagePart>,
) -> Result<ImageRecord, ImageError> {
    let layers =
        plan.layers
            .iter()
            .map(|layer| {
                let part = committed.get(&layer.span).cloned().ok_or_else(|| {
                    ImageError::InvalidRecord("a layer was not stored".to_owned())
                })?;
                Ok(ImageLayer {
                    part,
                    diff_id: layer.diff_id.clone(),
                })
            })
            .collect::<Result<_, ImageError>>()?;
    Ok(ImageRecord {
        name: plan.name.clone(),
        config,
        layers,
    })
}

fn check_diff_id(index: usize, declared: &str, actual: &str) -> Result<(), ImageError> {
    if declared != actual {
        return Err(ImageError::DiffIdMismatch {
            index,
            declared: declared.to_owned(),
            actual: actual.to_owned(),
        });
    }
    Ok(())
}

/// A layer read once: its digest, its diff_id and its bytes in an uncommitted upload.
struct Streamed {
    digest: String,
    diff_id: String,
    upload: Upload,
}

/// Hashes what is written to it: the uncompressed stream of a gzip layer.
#[derive(Default)]
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams one layer from the archive (never more than [`CHUNK`] bytes in memory) and checks its
/// digest; the caller checks the diff_id.
async fn stream_layer(
    store: &BlobStore,
    file: &mut tokio::fs::File,
    index: usize,
    layer: &LayerPlan,
) -> Result<Streamed, ImageError> {
    file.seek(SeekFrom::Start(layer.span.offset))
        .await
        .map_err(ImageError::io("reading the archive"))?;
    let mut reader = file.take(layer.span.size);
    let mut upload = store.begin_upload().await?;
    let mut hashes: Option<Hashes> = None;
    let mut buf = vec![0; CHUNK];
    loop {
        let n = fill(&mut reader, &mut buf)
            .await
            .map_err(ImageError::io("reading the archive"))?;
        if n == 0 {
            break;
        }
        let mut state = match hashes.take() {
            Some(state) => state,
            None => Hashes::new(detect(layer.compression, &buf[..n])?),
        };
        // Hashing, and above all gunzipping (a small chunk may inflate a thousandfold), is CPU
        // work that must not hold up the runtime's other tasks.
        let (state, chunk) = tokio::task::spawn_blocking(move || {
            state.update(&buf[..n]);
            (state, buf)
        })
        .await
        .map_err(|e| ImageError::Io {
            doing: "hashing a layer",
            source: io::Error::other(e),
        })?;
        buf = chunk;
        hashes = Some(state);
        upload.write(&buf[..n]).await?;
    }
    if upload.size() != layer.span.size {
        return Err(ImageError::invalid(
            "the archive ended early (was it changed while being read?)",
        ));
    }
    let hashes = hashes.unwrap_or_else(|| Hashes::new(layer.compression));
    let (digest, diff_id) = hashes.finish(index, layer)?;
    Ok(Streamed {
        digest,
        diff_id,
        upload,
    })
}

/// The running hashes of a layer: of its bytes, and of its tar when the bytes are gzip.
struct Hashes {
    stored: Sha256,
    gunzip: Option<MultiGzDecoder<HashWriter>>,
    /// Reported only once the digest is known to match: bytes that are not what the archive
    /// declared are the clearer story.
    gunzip_error: Option<io::Error>,
}

impl Hashes {
    fn new(compression: Compression) -> Self {
        Self {
            stored: Sha256::new(),
            gunzip: (compression == Compression::Gzip)
                .then(|| MultiGzDecoder::new(HashWriter::default())),
            gunzip_error: None,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.stored.update(chunk);
        if let Some(decoder) = &mut self.gunzip
            && self.gunzip_error.is_none()
        {
            self.gunzip_error = decoder.write_all(chunk).err();
        }
    }

    /// The digest (checked against the declared one) and the diff_id.
    fn finish(self, index: usize, layer: &LayerPlan) -> Result<(String, String), ImageError> {
        let digest = format!("sha256:{:x}", self.stored.finalize());
        if let Some(declared) = &layer.digest
            && *declared != digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {index}"),
                declared: declared.clone(),
                actual: digest,
            });
        }
        let not_gzip = |error: io::Error| {
            ImageError::invalid(format!("layer {index} does not gunzip ({error})"))
        };
        let diff_id = match (self.gunzip, self.gunzip_error) {
            (_, Some(error)) => return Err(not_gzip(error)),
            (Some(decoder), None) => {
                let tar = decoder.finish().map_err(not_gzip)?;
                format!("sha256:{:x}", tar.0.finalize())
            }
            (None, None) => digest.clone(),
        };
        Ok((digest, diff_id))
    }
}

/// How a layer is stored, knowing its first bytes.
fn detect(compression: Compression, first: &[u8]) -> Result<Compression, ImageError> {
    const GZIP: [u8; 2] = [0x1f, 0x8b];
    const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    match compression {
        Compression::Detect if first.starts_with(&GZIP) => Ok(Compression::Gzip),
        Compression::Detect if first.starts_with(&ZSTD) => Err(ImageError::Unsupported(
            "zstd-compressed layers; export the image with gzip or uncompressed layers".to_owned(),
        )),
        Compression::Detect => Ok(Compression::Tar),
        known => Ok(known),
    }
}

/// Reads until `buf` is full or the input ends, so that only the last chunk is short (and the
/// first holds enough bytes to recognise a compression).
async fn fill(reader: &mut (impl AsyncReadExt + Unpin), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Reads the archive's manifests and config (a `docker save` archive or an OCI layout): pass 1
/// after the entry table.
fn plan(
    tree: &Tree,
    file: &mut File,
    name: Option<&str>,
    max_blob_bytes: u64,
) -> Result<Plan, ImageError> {
    // Docker 25+ writes both; its manifest.json is the simpler and names the image's tags.
    let plan = if tree.contains("manifest.json") {
        docker::plan(tree, file, name)?
    } else if tree.contains("oci-layout") && tree.contains("index.json") {
        oci::plan(tree, file, name)?
    } else {
        return Err(ImageError::invalid(
            "neither a `docker save` archive (manifest.json) nor an OCI image layout \
             (oci-layout, index.json)",
        ));
    };
    let largest = plan.layers.iter().map(|l| l.span.size).max().unwrap_or(0);
    if largest > max_blob_bytes {
        return Err(ImageError::TooLarge {
            what: format!("a layer of {largest} bytes"),
            limit: max_blob_bytes,
        });
    }
    Ok(plan)
}
