//! A one-layer image made of one executable, for a node that runs a `[process]` app on Docker
//! (it offers no sandbox of its own): no registry, no Dockerfile, no base image — the layer
//! holds `/app/app` and the config runs it. Only a static binary runs this way (the image has no
//! libraries); a dynamic one fails to start, and its instance says why.

use std::io::{self, Read, Write};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{ImageError, export::new_header};

/// Where the executable is in the image, and what the image runs.
pub const WRAPPED_BINARY: &str = "/app/app";

/// The tag of the image wrapped around the binary whose content hash is `hash_hex`: one image
/// per binary, however many apps run it.
pub fn wrapped_tag(hash_hex: &str) -> String {
    format!("mycel-binary:{}", &hash_hex[..hash_hex.len().min(32)])
}

/// Writes a `docker save` archive of the image `tag`: one layer with `binary` (`size` bytes)
/// at [`WRAPPED_BINARY`], mode 0555, and a config whose entrypoint runs it from `/app`.
/// Reproducible: the same binary always makes the same image id.
///
/// Blocking: run it on a blocking thread.
pub fn write_wrapped_binary(
    binary: impl Read,
    size: u64,
    tag: &str,
    out: impl Write,
) -> Result<(), ImageError> {
    let mut layer = Vec::with_capacity(size as usize + 4096);
    {
        let mut tar = tar::Builder::new(&mut layer);
        let mut dir = new_header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut dir, "app/", io::empty())
            .map_err(ImageError::io("writing the binary's layer"))?;
        let mut file = new_header(tar::EntryType::Regular, 0o555, size);
        tar.append_data(&mut file, "app/app", binary.take(size))
            .map_err(ImageError::io("writing the binary's layer"))?;
        tar.finish()
            .map_err(ImageError::io("writing the binary's layer"))?;
    }
    let diff_id = format!("sha256:{:x}", Sha256::digest(&layer));
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [WRAPPED_BINARY], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "mycel: a [process] binary wrapped for Docker"}],
    });
    let config = serde_json::to_vec(&config).map_err(|e| ImageError::Io {
        doing: "encoding the image config",
        source: io::Error::other(e),
    })?;
    let config_name = format!("{:x}.json", Sha256::digest(&config));
    let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]);
    let manifest = serde_json::to_vec(&manifest).map_err(|e| ImageError::Io {
        doing: "encoding manifest.json",
        source: io::Error::other(e),
    })?;

    let mut tar = tar::Builder::new(out);
    let write = ImageError::io("writing the wrapped image");
    for (name, data) in [
        ("manifest.json", manifest.as_slice()),
        (config_name.as_str(), config.as_slice()),
        ("layer.tar", layer.as_slice()),
    ] {
        let mut entry = new_header(tar::EntryType::Regular, 0o644, data.len() as u64);
        tar.append_data(&mut entry, name, data)
            .map_err(ImageError::io("writing the wrapped image"))?;
    }
    tar.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(binary: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_wrapped_binary(binary, binary.len() as u64, "mycel-binary:ab", &mut out).unwrap();
        out
    }

    #[test]
    fn the_same_binary_makes_the_same_archive_with_the_binary_runnable_in_it() {
        let binary = b"\x7fELF not really";
        assert_eq!(archive(binary), archive(binary));
        let outer = archive(binary);
        let mut entries = tar::Archive::new(outer.as_slice());
        let mut names = Vec::new();
        let mut layer = Vec::new();
        for entry in entries.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name == "layer.tar" {
                entry.read_to_end(&mut layer).unwrap();
            }
            names.push(name);
        }
        assert_eq!(names[0], "manifest.json");
        assert!(
            names
                .iter()
                .any(|n| n.ends_with(".json") && n != "manifest.json")
        );
        let mut inner = tar::Archive::new(layer.as_slice());
        let app = inner
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_string_lossy() == "app/app")
            .expect("the binary is in the layer");
        assert_eq!(app.header().mode().unwrap(), 0o555);
        assert_eq!(app.header().size().unwrap(), binary.len() as u64);
    }

    #[test]
    fn tags_name_the_binary() {
        assert_eq!(
            wrapped_tag(&"ab".repeat(32)),
            format!("mycel-binary:{}", "ab".repeat(16))
        );
    }
}
