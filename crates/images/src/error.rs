//! What can go wrong with an image, said for the person who sent it, with a stable machine code.

use std::io;

use mycel_blobs::{BlobHash, StoreError};

/// Why an archive was refused or an image could not be written. Every variant but [`Io`],
/// [`Store`], [`MissingBlob`] and [`InvalidRecord`] is the sender's to fix (see
/// [`ImageError::is_client_error`]); an import that fails with any of them stored nothing.
///
/// [`Io`]: ImageError::Io
/// [`Store`]: ImageError::Store
/// [`MissingBlob`]: ImageError::MissingBlob
/// [`InvalidRecord`]: ImageError::InvalidRecord
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not a tar archive, a truncated one, or one without the files an image archive has.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("the archive entry {path:?} is refused: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("the archive entry {path:?} is a {kind}, which an image archive never holds")]
    UnsafeEntry { path: String, kind: &'static str },
    #[error("the link {path:?} -> {target:?} is refused: {reason}")]
    BadLink {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("the archive holds {0:?} twice")]
    DuplicatePath(String),
    #[error("{what} is too large: the limit is {limit}")]
    TooLarge { what: String, limit: u64 },
    #[error("{what} hashes to {actual}, not to its digest {declared}")]
    DigestMismatch {
        what: String,
        declared: String,
        actual: String,
    },
    #[error("layer {index} unpacks to {actual}, but the config's rootfs.diff_ids says {declared}")]
    DiffIdMismatch {
        index: usize,
        declared: String,
        actual: String,
    },
    #[error("invalid image config: {0}")]
    InvalidConfig(String),
    #[error("unsupported image archive: {0}")]
    Unsupported(String),
    #[error("the archive holds {0} images; export one image per archive")]
    SeveralImages(usize),
    #[error("the archive does not name its image; give a name (name:tag)")]
    NoName,
    #[error("the archive names its image {names:?}; give the one name (name:tag) to use")]
    AmbiguousName { names: Vec<String> },
    #[error("{name:?} is not a usable image name: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("the blob store does not hold {hash}, which the image needs")]
    MissingBlob { hash: BlobHash },
    #[error("invalid image record: {0}")]
    InvalidRecord(String),
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        source: io::Error,
    },
    #[error("storing the image: {0}")]
    Store(StoreError),
}

impl ImageError {
    /// A stable code for the API's `{"error", "code"}` answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidArchive(_) => "invalid_archive",
            Self::UnsafePath { .. } => "unsafe_path",
            Self::UnsafeEntry { .. } => "unsafe_entry",
            Self::BadLink { .. } => "bad_link",
            Self::DuplicatePath(_) => "duplicate_path",
            Self::TooLarge { .. } => "too_large",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::DiffIdMismatch { .. } => "diff_id_mismatch",
            Self::InvalidConfig(_) => "invalid_config",
            Self::Unsupported(_) => "unsupported",
            Self::SeveralImages(_) => "several_images",
            Self::NoName => "no_name",
            Self::AmbiguousName { .. } => "ambiguous_name",
            Self::InvalidName { .. } => "invalid_name",
            Self::MissingBlob { .. } => "missing_blob",
            Self::InvalidRecord(_) => "invalid_record",
            // One code for "this node failed", whatever the part: the caller answers 500.
            Self::Io { .. } | Self::Store(_) => "storage",
        }
    }

    /// Whether the archive or the request is at fault (answer 400), rather than this node.
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Self::Io { .. } | Self::Store(_) | Self::MissingBlob { .. } | Self::InvalidRecord(_)
        )
    }

    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(doing: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { doing, source }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArchive(message.into())
    }
}

impl From<StoreError> for ImageError {
    fn from(error: StoreError) -> Self {
        match error {
            // The store's size limit is the sender's problem: the image is too big for this node.
            StoreError::TooLarge { limit } => Self::TooLarge {
                what: "an image part".to_owned(),
                limit,
            },
            other => Self::Store(other),
        }
    }
}
