//! The user key the CLI signs deploys, scales and stops with: an ed25519 key at `--user-key`
//! (`MYCEL_USER_KEY`), else `$XDG_CONFIG_HOME/mycel/user.key`, else `~/.config/mycel/user.key`;
//! made on first use. The file holds a libp2p key, as a node's `node.key` does: pointing
//! `MYCEL_USER_KEY` at a node's key file acts as that node.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use mycel_protocol::{
    Keypair,
    ownership::{
        AppAction, HEADER_ISSUED_AT, HEADER_KEY, HEADER_SIGNATURE, OwnerKey, SignedRequest,
    },
};

static CHOSEN: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Chooses the key file for this command; `given` is `--user-key`. Called once, before a command
/// signs its first request.
pub(crate) fn choose_user_key(given: Option<PathBuf>) {
    let _ = CHOSEN.set(given.filter(|p| !p.as_os_str().is_empty()));
}

/// Where the user key lives.
pub(crate) fn path() -> anyhow::Result<PathBuf> {
    if let Some(Some(path)) = CHOSEN.get() {
        return Ok(path.clone());
    }
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = non_empty("MYCEL_USER_KEY") {
        return Ok(PathBuf::from(path));
    }
    let config = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => match non_empty("HOME") {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("no place for the user key: set MYCEL_USER_KEY, XDG_CONFIG_HOME or HOME"),
        },
    };
    Ok(config.join("mycel").join("user.key"))
}

/// The user key: read, or made and stored (owner-only) on first use. A file that is not a key
/// is an error, never replaced: the apps it owns would be lost to it.
pub(crate) fn load_or_create() -> anyhow::Result<Keypair> {
    let path = path()?;
    match fs::read(&path) {
        Ok(bytes) => parse(&path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(e).with_context(|| format!("reading the user key {}", path.display())),
    }
}

/// The user key's public form, if there is a key already (nothing is made).
pub(crate) fn existing() -> Option<OwnerKey> {
    let path = path().ok()?;
    let bytes = fs::read(&path).ok()?;
    OwnerKey::of(&parse(&path, &bytes).ok()?).ok()
}

fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<Keypair> {
    let not_a_key = || {
        format!(
            "{} is not a mycel user key (an ed25519 key); move it away to make a new one",
            path.display()
        )
    };
    let keypair = Keypair::from_protobuf_encoding(bytes).with_context(not_a_key)?;
    OwnerKey::of(&keypair).with_context(not_a_key)?;
    Ok(keypair)
}

/// Makes a key and stores it at `path` without ever replacing one: written to a file of its own,
/// then linked into place. When another command made one meanwhile, that one is used.
fn create(path: &Path) -> anyhow::Result<Keypair> {
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .context("encoding the new user key")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("user.key"),
        std::process::id()
    ));
    let written = write_private(&tmp, &bytes).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        // Said nowhere but by `mycel whoami`: a failing command prints one line only.
        Ok(()) => {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
            Ok(keypair)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let bytes = fs::read(path)
                .with_context(|| format!("reading the user key {}", path.display()))?;
            parse(path, &bytes)
        }
        Err(e) => Err(e).with_context(|| format!("writing the user key {}", path.display())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `request` signed by the user key for `action`: the three `x-mycel-*` headers.
pub(super) fn sign(
    request: reqwest::RequestBuilder,
    action: AppAction,
) -> anyhow::Result<reqwest::RequestBuilder> {
    let keypair = load_or_create()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_millis() as u64;
    let signed = SignedRequest::sign(&keypair, now_ms, action).context("signing the request")?;
    Ok(request
        .header(HEADER_KEY, signed.key.to_string())
        .header(HEADER_ISSUED_AT, signed.issued_at_ms.to_string())
        .header(HEADER_SIGNATURE, signed.signature_hex()))
}

/// `mycel whoami`: the user key's public form (made on first use), and where it lives.
pub(crate) fn whoami() -> anyhow::Result<()> {
    let keypair = load_or_create()?;
    println!("{}", OwnerKey::of(&keypair)?);
    eprintln!("user key: {}", path()?.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_owner_only_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/user.key");
        let made = create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // Another command that races to make one uses the first.
        let again = create(&path).unwrap();
        assert_eq!(again.public(), made.public());
        let read = parse(&path, &fs::read(&path).unwrap()).unwrap();
        assert_eq!(read.public(), made.public());
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn a_file_that_is_no_key_is_an_error_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.key");
        fs::write(&path, b"not a key").unwrap();
        let error = parse(&path, b"not a key").unwrap_err();
        assert!(format!("{error:#}").contains("move it away"), "{error:#}");
        assert_eq!(fs::read(&path).unwrap(), b"not a key");
    }
}
