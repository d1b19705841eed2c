//! App discovery through the DHT: the signed listing a node makes of each app it runs, the keys
//! listings live under, the directory that lets any node enumerate apps, and the rules every
//! listing must meet wherever it is stored or read.
//!
//! - A **listing** ([`AppListing`]) says "this node runs app `name` at `version`, published by
//!   `publisher`, until `expires_at_ms`". The node that runs the app signs it with its node key
//!   (a [`Signed`] envelope, domain `mycel/app-listing/1`), so the signer is a provider, and
//!   nobody can list an app on another node's behalf.
//! - **Per-app key** [`app_key`] (`/mycel/app/<name>`): the running nodes provide it in
//!   Kademlia and put their listing there as a DHT record: lookups by name.
//! - **Directory** ([`DIRECTORY_SHARDS`] keys, [`directory_key`] `/mycel/apps/<shard>`): a
//!   listing also goes to the few nodes closest to its shard's key (its *home nodes*), which keep
//!   every listing of the shard; enumerating apps asks the home nodes of each shard
//!   ([`DiscoverRequest`], protocol `/mycel/discover/1`).
//!
//! Every listing is checked ([`verify_listing`], [`verify_dht_record`]) before it is stored and
//! again when it is read: size before decoding, signature, field rules, expiry.

use serde::{Deserialize, Serialize};

use crate::{
    BlobHash, PeerId, Signed,
    app::{AppKind, check_name, check_version},
    codec::{self, CodecError},
    envelope::{EnvelopeError, SignedKind},
};

/// The listing format this build writes and the only one it accepts.
pub const LISTING_FORMAT: u16 = 1;
/// The largest listing payload (its CBOR frame); checked before a byte of it is decoded.
pub const MAX_LISTING_BYTES: usize = 1024;
/// The largest signed listing on the wire: the payload plus signer, signature and framing.
pub const MAX_SIGNED_LISTING_BYTES: usize = MAX_LISTING_BYTES + 256;
/// The longest description a listing may carry.
pub const MAX_DESCRIPTION_BYTES: usize = 280;
/// The longest a listing may live: a node re-signs its listings well before they expire.
pub const MAX_LIFETIME_MS: u64 = 24 * 60 * 60 * 1000;
/// How long a node's listings live unless configured otherwise; it re-signs and re-announces
/// them after a third of that.
pub const DEFAULT_LIFETIME_MS: u64 = 5 * 60 * 1000;
/// How far in the future a listing may say it was issued (clocks differ a little).
pub const CLOCK_SKEW_MS: u64 = 60_000;
/// How many directory shards the apps are spread over (a change is a new protocol version).
pub const DIRECTORY_SHARDS: u16 = 16;
/// The largest frame of the discover protocol, either way.
pub const MAX_DISCOVER_FRAME_BYTES: usize = 1024 * 1024;
/// Most listings one `Publish` may carry.
pub const MAX_PUBLISH_LISTINGS: usize = 256;
/// Most listings one `List` answer carries (they fit in a frame).
pub const MAX_LIST_LISTINGS: usize = 600;
/// Most names one `Withdraw` or shards one `List` may carry.
pub const MAX_REQUEST_ITEMS: usize = 256;

const APP_KEY_PREFIX: &str = "/mycel/app/";
const DIRECTORY_KEY_PREFIX: &str = "/mycel/apps/";

/// What a node says about an app it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppListing {
    /// [`LISTING_FORMAT`].
    pub format: u16,
    pub name: String,
    pub version: String,
    pub kind: AppKind,
    /// The peer id of the key that deployed the app.
    pub publisher: String,
    /// BLAKE3 of the manifest as the placement group holds it (its JSON).
    pub manifest_hash: BlobHash,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Wall-clock milliseconds when the listing was signed.
    pub issued_at_ms: u64,
    /// Wall-clock milliseconds after which nobody stores or returns it.
    pub expires_at_ms: u64,
}

impl SignedKind for AppListing {
    const DOMAIN: &'static [u8] = b"mycel/app-listing/1";
}

/// A listing whose signature and rules were checked.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedListing {
    /// The node that signed it: a node that runs the app.
    pub signer: PeerId,
    pub listing: AppListing,
    /// The envelope as it was received, to pass on unchanged.
    pub envelope: Signed<AppListing>,
}

/// Why a listing was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error("listing of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed listing: {0}")]
    Malformed(String),
    #[error("the listing's signature does not verify")]
    Forged,
    #[error("invalid listing: {0}")]
    Invalid(String),
    #[error("the listing expired")]
    Expired,
    #[error("the listing is stored under a key that is not its app's")]
    WrongKey,
}

impl ListingError {
    /// A short label for metrics: `oversized`, `malformed`, `forged`, `invalid` or `expired`.
    pub fn reason(&self) -> &'static str {
        match self {
            ListingError::TooLarge { .. } => "oversized",
            ListingError::Malformed(_) => "malformed",
            ListingError::Forged => "forged",
            ListingError::Invalid(_) | ListingError::WrongKey => "invalid",
            ListingError::Expired => "expired",
        }
    }
}

impl From<EnvelopeError> for ListingError {
    fn from(error: EnvelopeError) -> Self {
        match error {
            EnvelopeError::BadSigner | EnvelopeError::BadSignature => ListingError::Forged,
            EnvelopeError::Payload(CodecError::TooLarge { len, limit }) => {
                ListingError::TooLarge { len, limit }
            }
            other => ListingError::Malformed(other.to_string()),
        }
    }
}

impl AppListing {
    /// Checks the listing's rules at wall-clock time `now_ms`.
    pub fn validate(&self, now_ms: u64) -> Result<(), ListingError> {
        let invalid = |reason: String| Err(ListingError::Invalid(reason));
        if self.format != LISTING_FORMAT {
            return invalid(format!(
                "format {} (this node reads {LISTING_FORMAT})",
                self.format
            ));
        }
        check_name(&self.name).map_err(|e| ListingError::Invalid(e.to_string()))?;
        check_version(&self.version).map_err(|e| ListingError::Invalid(e.to_string()))?;
        if self.publisher.parse::<PeerId>().is_err() {
            return invalid("publisher: not a peer id".into());
        }
        if let Some(description) = &self.description
            && (description.len() > MAX_DESCRIPTION_BYTES
                || description.chars().any(char::is_control))
        {
            return invalid(format!(
                "description: at most {MAX_DESCRIPTION_BYTES} bytes without control characters"
            ));
        }
        if self.issued_at_ms > now_ms.saturating_add(CLOCK_SKEW_MS) {
            return invalid("issued in the future".into());
        }
        if self.expires_at_ms <= self.issued_at_ms
            || self.expires_at_ms - self.issued_at_ms > MAX_LIFETIME_MS
        {
            return invalid(format!(
                "lifetime: more than 0 and at most {MAX_LIFETIME_MS} ms"
            ));
        }
        if self.expires_at_ms <= now_ms {
            return Err(ListingError::Expired);
        }
        Ok(())
    }
}

/// Checks a signed listing at wall-clock time `now_ms`: signature, size, rules, expiry.
pub fn verify_listing(
    envelope: &Signed<AppListing>,
    now_ms: u64,
) -> Result<VerifiedListing, ListingError> {
    let verified = envelope.verify(MAX_LISTING_BYTES)?;
    verified.message.validate(now_ms)?;
    Ok(VerifiedListing {
        signer: verified.signer,
        listing: verified.message,
        envelope: envelope.clone(),
    })
}

/// Decodes and checks a signed listing as it travels in a DHT record's value.
pub fn decode_listing(bytes: &[u8], now_ms: u64) -> Result<VerifiedListing, ListingError> {
    let envelope: Signed<AppListing> =
        codec::decode(bytes, MAX_SIGNED_LISTING_BYTES).map_err(|e| match e {
            CodecError::TooLarge { len, limit } => ListingError::TooLarge { len, limit },
            other => ListingError::Malformed(other.to_string()),
        })?;
    verify_listing(&envelope, now_ms)
}

/// Checks a DHT record: its value must be a valid signed listing of the app its key names.
/// mycel's DHT holds no other records.
pub fn verify_dht_record(
    key: &[u8],
    value: &[u8],
    now_ms: u64,
) -> Result<VerifiedListing, ListingError> {
    let name = app_of_key(key).ok_or(ListingError::WrongKey)?;
    let verified = decode_listing(value, now_ms)?;
    if verified.listing.name != name {
        return Err(ListingError::WrongKey);
    }
    Ok(verified)
}

/// Whether `name` could name an app (a DNS label): nothing else is worth looking up.
pub fn is_app_name(name: &str) -> bool {
    check_name(name).is_ok()
}

/// The DHT key of app `name`: `/mycel/app/<name>`.
pub fn app_key(name: &str) -> Vec<u8> {
    format!("{APP_KEY_PREFIX}{name}").into_bytes()
}

/// The app a DHT key names, when it is an app key.
pub fn app_of_key(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key).ok()?.strip_prefix(APP_KEY_PREFIX)
}

/// The directory shard of app `name`: FNV-1a of the name, so every node agrees without a hash
/// library and names spread evenly.
pub fn shard_of(name: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(DIRECTORY_SHARDS)) as u16
}

/// The DHT key whose closest nodes keep directory shard `shard`: `/mycel/apps/<shard>`.
pub fn directory_key(shard: u16) -> Vec<u8> {
    format!("{DIRECTORY_KEY_PREFIX}{shard}").into_bytes()
}

/// A request of the discover protocol (`/mycel/discover/1`): one frame each way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoverRequest {
    /// "Keep these listings in your directory": sent to a shard's home nodes.
    Publish { listings: Vec<Signed<AppListing>> },
    /// "I no longer run these apps": drops the sender's own listings of them.
    Withdraw { names: Vec<String> },
    /// "Send the listings you keep for these shards" (only app `name`'s, when given).
    List {
        shards: Vec<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

/// The answer to a [`DiscoverRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoverResponse {
    /// How many of the published listings were kept (the others were invalid or over a limit).
    Stored {
        kept: u32,
    },
    Withdrawn,
    Listings {
        listings: Vec<Signed<AppListing>>,
    },
    /// The request breaks a limit.
    Refused {
        reason: String,
    },
}

impl DiscoverRequest {
    /// Checks the request's counts (each listing is checked on its own when it is stored).
    pub fn check_limits(&self) -> Result<(), String> {
        let (count, limit) = match self {
            DiscoverRequest::Publish { listings } => (listings.len(), MAX_PUBLISH_LISTINGS),
            DiscoverRequest::Withdraw { names } => (names.len(), MAX_REQUEST_ITEMS),
            DiscoverRequest::List { shards, .. } => (shards.len(), MAX_REQUEST_ITEMS),
        };
        if count > limit {
            return Err(format!("{count} items; at most {limit} per request"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
