//! Join tickets: one line that a person copies from a member of a mesh to a new node, carrying
//! everything the new node needs to join: the member's peer id, its addresses and, for a private
//! mesh, the mesh's secret.
//!
//! The text is `mycel` followed by base32 (RFC 4648's alphabet, lower case, no padding) of
//!
//! ```text
//! [version: u8] ‖ CBOR body {"p": peer id, "a": [multiaddr], "s"?: 32-byte secret} ‖ CRC-32 (BE)
//! ```
//!
//! Base32 has no character that a shell, a URL or a terminal's double-click treats specially, and
//! parsing ignores case and whitespace, so a ticket wrapped over lines by a mail client still
//! reads. The checksum turns a damaged copy into a clear error instead of a wrong secret (which
//! would only show as refused connections). The version byte comes first in every version; a
//! newer mycel may add body fields without a new version (unknown fields are ignored), and bumps
//! the version only for changes an older one would misread.
//!
//! A ticket without a secret joins an open mesh: it is a bootstrap address that is easy to copy.

use std::{fmt, str::FromStr};

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// What every ticket starts with.
pub const TICKET_PREFIX: &str = "mycel";
/// The ticket version this build writes and the newest it reads.
pub const TICKET_VERSION: u8 = 1;
/// The longest ticket text read (a ticket with a dozen addresses is about 400 characters).
pub const MAX_TICKET_CHARS: usize = 4096;
/// The most addresses a ticket carries.
pub const MAX_TICKET_ADDRS: usize = 16;
/// The longest one address in a ticket, in bytes.
const MAX_ADDR_BYTES: usize = 256;
const CHECKSUM_BYTES: usize = 4;

/// A private mesh's secret: 32 random bytes that every member holds and that no connection
/// completes without. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshSecret([u8; MeshSecret::LEN]);

/// Why a text is not a mesh secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a mesh secret is {} hex digits", MeshSecret::LEN * 2)]
pub struct InvalidSecret;

impl MeshSecret {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The secret itself, to key the transport or store it. Never log it.
    pub fn expose(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Lower-case hex, as `<data-dir>/mesh.secret` keeps it.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Reads [`Self::to_hex`]'s form (either case); surrounding whitespace is ignored.
    pub fn from_hex(text: &str) -> Result<Self, InvalidSecret> {
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .map_err(|_| InvalidSecret)?;
        Ok(Self(bytes.try_into().map_err(|_| InvalidSecret)?))
    }
}

impl fmt::Debug for MeshSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshSecret(<redacted>)")
    }
}

/// A member to join through, and the mesh's secret when the mesh is private.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTicket {
    pub peer_id: PeerId,
    /// The member's addresses, without `/p2p/<peer id>`.
    pub addrs: Vec<Multiaddr>,
    /// `None`: an open mesh.
    pub secret: Option<MeshSecret>,
}

/// Why a text is not a join ticket this build can use.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error(
        "not a mycel join ticket ({0}); copy the whole line that `mycel join-ticket` prints, or \
         node.json's \"join\""
    )]
    NotATicket(&'static str),
    #[error("the join ticket is {len} characters long; one is at most {MAX_TICKET_CHARS}")]
    TooLong { len: usize },
    #[error("the join ticket is damaged (its checksum does not match); copy the whole line again")]
    Damaged,
    #[error(
        "ticket version {version} is newer than this mycel (it reads version {TICKET_VERSION}); \
         upgrade mycel"
    )]
    Newer { version: u8 },
    #[error("a malformed join ticket: {0}")]
    Malformed(String),
}

/// The CBOR body; one-letter keys keep the ticket short.
#[derive(Serialize, Deserialize)]
struct Body {
    #[serde(rename = "p")]
    peer: ByteBuf,
    #[serde(rename = "a")]
    addrs: Vec<ByteBuf>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    secret: Option<ByteBuf>,
}

impl JoinTicket {
    /// A ticket for `peer_id` at `addrs` (any `/p2p/…` in them is dropped); at most
    /// [`MAX_TICKET_ADDRS`] addresses are kept.
    pub fn new(peer_id: PeerId, addrs: &[Multiaddr], secret: Option<MeshSecret>) -> Self {
        let addrs = addrs
            .iter()
            .map(without_peer)
            .filter(|a| !a.is_empty() && a.as_ref().len() <= MAX_ADDR_BYTES)
            .take(MAX_TICKET_ADDRS)
            .collect();
        Self {
            peer_id,
            addrs,
            secret,
        }
    }

    pub fn is_private(&self) -> bool {
        self.secret.is_some()
    }

    /// The member's addresses as bootstrap addresses: each ending in `/p2p/<peer id>`.
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(self.peer_id)))
            .collect()
    }

    /// Whether `text` is meant as a ticket rather than a multiaddr (which starts with `/`):
    /// what a flag that takes either looks at before parsing.
    pub fn looks_like_ticket(text: &str) -> bool {
        let text = text.trim_start();
        text.len() >= TICKET_PREFIX.len()
            && text.as_bytes()[..TICKET_PREFIX.len()].eq_ignore_ascii_case(TICKET_PREFIX.as_bytes())
    }

    fn encode(&self) -> String {
        let body = Body {
            peer: ByteBuf::from(self.peer_id.to_bytes()),
            addrs: self
                .addrs
                .iter()
                .map(|a| ByteBuf::from(a.to_vec()))
                .collect(),
            secret: self
                .secret
                .as_ref()
                .map(|s| ByteBuf::from(s.expose().to_vec())),
        };
        let mut payload = vec![TICKET_VERSION];
        ciborium::into_writer(&body, &mut payload).expect("CBOR into a Vec cannot fail");
        let checksum = crc32fast::hash(&payload);
        payload.extend_from_slice(&checksum.to_be_bytes());
        let text = data_encoding::BASE32_NOPAD
            .encode(&payload)
            .to_ascii_lowercase();
        format!("{TICKET_PREFIX}{text}")
    }

    fn decode(text: &str) -> Result<Self, TicketError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if text.len() > MAX_TICKET_CHARS {
            return Err(TicketError::TooLong { len: text.len() });
        }
        if !Self::looks_like_ticket(&text) {
            return Err(TicketError::NotATicket("it does not start with 'mycel'"));
        }
        let encoded = text[TICKET_PREFIX.len()..].to_ascii_uppercase();
        let payload = data_encoding::BASE32_NOPAD
            .decode(encoded.as_bytes())
            .map_err(|_| TicketError::NotATicket("what follows 'mycel' is not base32"))?;
        let Some((&version, _)) = payload.split_first() else {
            return Err(TicketError::NotATicket("nothing follows 'mycel'"));
        };
        match version {
            0 => return Err(TicketError::Malformed("version 0 does not exist".into())),
            v if v > TICKET_VERSION => return Err(TicketError::Newer { version: v }),
            _ => {}
        }
        if payload.len() < 1 + CHECKSUM_BYTES {
            return Err(TicketError::Damaged);
        }
        let (signed, checksum) = payload.split_at(payload.len() - CHECKSUM_BYTES);
        if crc32fast::hash(signed).to_be_bytes() != checksum {
            return Err(TicketError::Damaged);
        }
        let body: Body = ciborium::from_reader(&signed[1..])
            .map_err(|e| TicketError::Malformed(format!("its body does not decode: {e}")))?;
        Self::from_body(body)
    }

    fn from_body(body: Body) -> Result<Self, TicketError> {
        let malformed = |what: &str| TicketError::Malformed(what.to_string());
        let peer_id =
            PeerId::from_bytes(&body.peer).map_err(|_| malformed("its peer id is not one"))?;
        if body.addrs.is_empty() {
            return Err(malformed("it names no address"));
        }
        if body.addrs.len() > MAX_TICKET_ADDRS {
            return Err(malformed("it names too many addresses"));
        }
        let mut addrs = Vec::with_capacity(body.addrs.len());
        for bytes in body.addrs {
            if bytes.len() > MAX_ADDR_BYTES {
                return Err(malformed("an address is too long"));
            }
            let addr = Multiaddr::try_from(bytes.into_vec())
                .map_err(|_| malformed("an address is not a multiaddr"))?;
            if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) || addr.is_empty() {
                return Err(malformed("an address is not a plain transport address"));
            }
            addrs.push(addr);
        }
        let secret = match body.secret {
            None => None,
            Some(bytes) => Some(MeshSecret(
                bytes
                    .into_vec()
                    .try_into()
                    .map_err(|_| malformed("its secret is not 32 bytes"))?,
            )),
        };
        Ok(Self {
            peer_id,
            addrs,
            secret,
        })
    }
}

fn without_peer(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

impl fmt::Display for JoinTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for JoinTicket {
    type Err = TicketError;

    fn from_str(text: &str) -> Result<Self, TicketError> {
        Self::decode(text)
    }
}

#[cfg(test)]
mod tests;
