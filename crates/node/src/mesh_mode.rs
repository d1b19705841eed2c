//! Whether this node's mesh is private, with which secret, or open: decided once at start from
//! what the data dir remembers and what the command line asks, then remembered in the data dir
//! (`mesh.secret`, owner-only; or `mesh.open`). The decision is a pure function, [`decide`];
//! [`resolve`] reads and writes the files around it.
//!
//! | the data dir holds | asked | the node |
//! |---|---|---|
//! | nothing | no bootstrap, no `--open` | starts a new private mesh: a new secret |
//! | nothing | a private mesh's ticket | joins that mesh, keeps its secret |
//! | nothing | `--open`, plain addresses, open tickets | starts or joins an open mesh |
//! | a secret | nothing, addresses, a ticket with that secret | stays in its mesh |
//! | a secret | `--open`, another secret, an open ticket | refuses to start: never switches meshes |
//! | `mesh.open` | anything but a private ticket | stays open |
//! | a node key, no mode (made before private meshes) | as for `mesh.open` | stays open |

use std::{fs, io, path::Path};

use mycel_mesh::MeshSecret;

use crate::{Bootstrap, NodeError, datadir};

/// A private mesh's secret, hex, owner-only.
pub const SECRET_FILE: &str = "mesh.secret";
/// Present when the node's mesh is open.
pub const OPEN_FILE: &str = "mesh.open";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshMode {
    Private(MeshSecret),
    Open,
}

impl MeshMode {
    pub fn secret(&self) -> Option<&MeshSecret> {
        match self {
            MeshMode::Private(secret) => Some(secret),
            MeshMode::Open => None,
        }
    }
}

/// What the data dir remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    Private(MeshSecret),
    Open,
    /// A node key but no mode: a data dir from before private meshes, whose mesh was open.
    Legacy,
    Nothing,
}

/// The mode, and whether it is new to the data dir (to be written down).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub mode: MeshMode,
    pub store: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    #[error(
        "this data dir belongs to a private mesh ({SECRET_FILE}); --open would leave it: start \
         an open mesh with another --data-dir"
    )]
    OpenOnPrivate,
    #[error(
        "the join ticket is for another mesh than the one this data dir belongs to (its secret \
         differs from {SECRET_FILE}): join that mesh with another --data-dir"
    )]
    OtherMesh,
    #[error(
        "the join ticket is an open mesh's, but this data dir belongs to a private mesh \
         ({SECRET_FILE}): join the open mesh with another --data-dir"
    )]
    OpenTicketOnPrivate,
    #[error(
        "this data dir belongs to an open mesh; a private mesh's join ticket needs another \
         --data-dir"
    )]
    PrivateTicketOnOpen,
    #[error("the join tickets are for different meshes (their secrets differ)")]
    TicketsDisagree,
    #[error("the join tickets mix an open mesh's and a private mesh's")]
    MixedTickets,
    #[error("--open makes an open mesh, but the join ticket is a private mesh's: drop --open")]
    OpenWithPrivateTicket,
}

/// Decides the mode (see the module's table); `new_secret` makes a new mesh's secret.
pub fn decide(
    stored: Stored,
    open: bool,
    bootstrap: &[Bootstrap],
    new_secret: impl FnOnce() -> MeshSecret,
) -> Result<Decision, ModeError> {
    let mut ticket_secret: Option<&MeshSecret> = None;
    let mut open_ticket = false;
    for ticket in bootstrap.iter().filter_map(|b| match b {
        Bootstrap::Ticket(ticket) => Some(ticket),
        Bootstrap::Addr(_) => None,
    }) {
        match (&ticket.secret, ticket_secret) {
            (None, _) => open_ticket = true,
            (Some(secret), Some(seen)) if secret != seen => return Err(ModeError::TicketsDisagree),
            (Some(secret), _) => ticket_secret = Some(secret),
        }
    }
    if open_ticket && ticket_secret.is_some() {
        return Err(ModeError::MixedTickets);
    }
    let keep = |mode| Decision { mode, store: false };
    let store = |mode| Decision { mode, store: true };
    match stored {
        Stored::Private(secret) => {
            if open {
                Err(ModeError::OpenOnPrivate)
            } else if ticket_secret.is_some_and(|t| *t != secret) {
                Err(ModeError::OtherMesh)
            } else if open_ticket {
                Err(ModeError::OpenTicketOnPrivate)
            } else {
                Ok(keep(MeshMode::Private(secret)))
            }
        }
        Stored::Open | Stored::Legacy if ticket_secret.is_some() => {
            Err(ModeError::PrivateTicketOnOpen)
        }
        Stored::Open => Ok(keep(MeshMode::Open)),
        Stored::Legacy => Ok(store(MeshMode::Open)),
        Stored::Nothing => match ticket_secret {
            Some(_) if open => Err(ModeError::OpenWithPrivateTicket),
            Some(secret) => Ok(store(MeshMode::Private(secret.clone()))),
            // Asked for, or joining an open mesh by address or open ticket.
            None if open || !bootstrap.is_empty() => Ok(store(MeshMode::Open)),
            None => Ok(store(MeshMode::Private(new_secret()))),
        },
    }
}

/// The mode of the node running from `dir`, decided and remembered there.
pub fn resolve(dir: &Path, open: bool, bootstrap: &[Bootstrap]) -> Result<MeshMode, NodeError> {
    let stored = read(dir)?;
    let legacy = stored == Stored::Legacy;
    let decision = decide(
        stored,
        open,
        bootstrap,
        mycel_mesh::transport::generate_secret,
    )?;
    if decision.store {
        store(dir, &decision.mode)?;
        if legacy {
            tracing::info!(
                "this data dir is from before private meshes: its mesh stays open ({OPEN_FILE})"
            );
        }
    }
    Ok(decision.mode)
}

fn read(dir: &Path) -> Result<Stored, NodeError> {
    let path = dir.join(SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            return MeshSecret::from_hex(&text)
                .map(Stored::Private)
                .map_err(|e| NodeError::Unreadable {
                    what: format!(
                        "a mesh secret ({e}); it is never replaced, since it is the mesh's: \
                         restore it, or move it away with the data dir"
                    ),
                    path,
                });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(NodeError::io("reading", &path)(e)),
    }
    Ok(if dir.join(OPEN_FILE).exists() {
        Stored::Open
    } else if dir.join(datadir::KEY_FILE).exists() {
        Stored::Legacy
    } else {
        Stored::Nothing
    })
}

fn store(dir: &Path, mode: &MeshMode) -> Result<(), NodeError> {
    let (path, text) = match mode {
        MeshMode::Private(secret) => (dir.join(SECRET_FILE), format!("{}\n", secret.to_hex())),
        MeshMode::Open => (
            dir.join(OPEN_FILE),
            "this node's mesh is open: any node may join it (mycel up --open)\n".to_string(),
        ),
    };
    datadir::write_private(&path, text.as_bytes()).map_err(NodeError::io("writing", &path))
}

#[cfg(test)]
mod tests {
    use mycel_mesh::JoinTicket;

    use super::*;

    fn secret(byte: u8) -> MeshSecret {
        MeshSecret::from_bytes([byte; 32])
    }

    fn ticket(secret: Option<MeshSecret>) -> Bootstrap {
        let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            .parse()
            .unwrap();
        let addr = "/ip4/192.0.2.10/tcp/7400".parse().unwrap();
        Bootstrap::Ticket(JoinTicket::new(peer, &[addr], secret))
    }

    fn addr() -> Bootstrap {
        Bootstrap::Addr(
            "/ip4/192.0.2.10/tcp/7400/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .parse()
                .unwrap(),
        )
    }

    fn decided(stored: Stored, open: bool, bootstrap: &[Bootstrap]) -> Result<Decision, ModeError> {
        decide(stored, open, bootstrap, || secret(99))
    }

    fn new(mode: MeshMode) -> Result<Decision, ModeError> {
        Ok(Decision { mode, store: true })
    }

    fn kept(mode: MeshMode) -> Result<Decision, ModeError> {
        Ok(Decision { mode, store: false })
    }

    #[test]
    fn a_fresh_data_dir_starts_or_joins() {
        use MeshMode::*;
        let nothing = || Stored::Nothing;
        assert_eq!(decided(nothing(), false, &[]), new(Private(secret(99))));
        assert_eq!(
            decided(nothing(), false, &[ticket(Some(secret(1))), addr()]),
            new(Private(secret(1)))
        );
        assert_eq!(decided(nothing(), true, &[]), new(Open));
        assert_eq!(decided(nothing(), false, &[addr()]), new(Open));
        assert_eq!(decided(nothing(), false, &[ticket(None)]), new(Open));
        assert_eq!(
            decided(nothing(), true, &[ticket(Some(secret(1)))]),
            Err(ModeError::OpenWithPrivateTicket)
        );
        assert_eq!(
            decided(
                nothing(),
                false,
                &[ticket(Some(secret(1))), ticket(Some(secret(2)))]
            ),
            Err(ModeError::TicketsDisagree)
        );
        assert_eq!(
            decided(nothing(), false, &[ticket(Some(secret(1))), ticket(None)]),
            Err(ModeError::MixedTickets)
        );
    }

    #[test]
    fn a_private_node_never_switches_meshes() {
        use MeshMode::*;
        let mine = || Stored::Private(secret(1));
        assert_eq!(decided(mine(), false, &[]), kept(Private(secret(1))));
        assert_eq!(decided(mine(), false, &[addr()]), kept(Private(secret(1))));
        assert_eq!(
            decided(mine(), false, &[ticket(Some(secret(1)))]),
            kept(Private(secret(1)))
        );
        assert_eq!(decided(mine(), true, &[]), Err(ModeError::OpenOnPrivate));
        assert_eq!(
            decided(mine(), false, &[ticket(Some(secret(2)))]),
            Err(ModeError::OtherMesh)
        );
        assert_eq!(
            decided(mine(), false, &[ticket(None)]),
            Err(ModeError::OpenTicketOnPrivate)
        );
    }

    #[test]
    fn an_open_node_stays_open() {
        use MeshMode::*;
        for open in [false, true] {
            assert_eq!(decided(Stored::Open, open, &[]), kept(Open));
            assert_eq!(
                decided(Stored::Open, open, &[addr(), ticket(None)]),
                kept(Open)
            );
            // A data dir from before private meshes was in an open mesh: it stays there.
            assert_eq!(decided(Stored::Legacy, open, &[]), new(Open));
        }
        for stored in [Stored::Open, Stored::Legacy] {
            assert_eq!(
                decided(stored, false, &[ticket(Some(secret(1)))]),
                Err(ModeError::PrivateTicketOnOpen)
            );
        }
    }

    #[test]
    fn the_mode_is_remembered_privately_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve(dir.path(), false, &[]).unwrap();
        let MeshMode::Private(secret) = &first else {
            panic!("{first:?}");
        };
        let path = dir.path().join(SECRET_FILE);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(resolve(dir.path(), false, &[]).unwrap(), first);
        assert_eq!(
            resolve(dir.path(), false, &[ticket(Some(secret.clone()))]).unwrap(),
            first
        );
        assert!(resolve(dir.path(), true, &[]).is_err());

        let open = tempfile::tempdir().unwrap();
        assert_eq!(resolve(open.path(), true, &[]).unwrap(), MeshMode::Open);
        assert_eq!(resolve(open.path(), false, &[]).unwrap(), MeshMode::Open);
        assert!(open.path().join(OPEN_FILE).exists());

        let legacy = tempfile::tempdir().unwrap();
        fs::write(legacy.path().join(datadir::KEY_FILE), b"key").unwrap();
        assert_eq!(resolve(legacy.path(), false, &[]).unwrap(), MeshMode::Open);
        assert!(legacy.path().join(OPEN_FILE).exists());

        let corrupt = tempfile::tempdir().unwrap();
        fs::write(corrupt.path().join(SECRET_FILE), b"not hex\n").unwrap();
        let error = resolve(corrupt.path(), false, &[]).unwrap_err().to_string();
        assert!(error.contains("is not a mesh secret"), "{error}");
        assert_eq!(
            fs::read(corrupt.path().join(SECRET_FILE)).unwrap(),
            b"not hex\n"
        );
    }
}
