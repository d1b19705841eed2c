//! `mycel deploy`'s manifest file: read it (TOML or JSON, by extension; a JSON file may also be
//! the seed's deploy body, translated into a manifest), and find the files it names by relative
//! path, which the CLI uploads and replaces by their hashes before the API sees the manifest (the
//! API takes hashes only).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mycel_protocol::{
    BlobHash, Manifest,
    app::{BlobRef, MAX_MANIFEST_BYTES},
    seed::{SeedDeploy, is_seed_form},
};

/// A field of the manifest that names a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BlobField {
    WasmModule,
    ContainerArchive,
    ProcessBinary,
}

impl BlobField {
    pub(super) fn name(self) -> &'static str {
        match self {
            BlobField::WasmModule => "wasm.module",
            BlobField::ContainerArchive => "container.archive",
            BlobField::ProcessBinary => "process.binary",
        }
    }

    fn get(self, manifest: &Manifest) -> Option<&str> {
        match self {
            BlobField::WasmModule => manifest.wasm.as_ref().map(|w| w.module.as_str()),
            BlobField::ContainerArchive => manifest
                .container
                .as_ref()
                .and_then(|c| c.archive.as_deref()),
            BlobField::ProcessBinary => manifest.process.as_ref().map(|p| p.binary.as_str()),
        }
    }

    /// Replaces the field's path by `hash`.
    pub(super) fn set(self, manifest: &mut Manifest, hash: BlobHash) {
        let text = hash.to_string();
        match self {
            BlobField::WasmModule => {
                if let Some(wasm) = manifest.wasm.as_mut() {
                    wasm.module = text;
                }
            }
            BlobField::ContainerArchive => {
                if let Some(container) = manifest.container.as_mut() {
                    container.archive = Some(text);
                }
            }
            BlobField::ProcessBinary => {
                if let Some(process) = manifest.process.as_mut() {
                    process.binary = text;
                }
            }
        }
    }
}

/// A file the manifest names, to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LocalBlob {
    pub(super) field: BlobField,
    /// As the manifest says it.
    pub(super) given: String,
    /// Resolved against the manifest's directory.
    pub(super) path: PathBuf,
}

/// A manifest file, read.
#[derive(Debug)]
pub(super) struct Loaded {
    pub(super) manifest: Manifest,
    /// The files it names, to upload.
    pub(super) blobs: Vec<LocalBlob>,
    /// What a seed-form file asks for that the manifest does not apply, one sentence each.
    pub(super) warnings: Vec<String>,
}

/// Reads and validates the manifest at `file`, and finds every file it names. A `.json` file may
/// also be a seed deploy body (see `mycel_protocol::seed`): it is translated into a manifest, and
/// what it asks for that is not applied becomes warnings. Fails with one clear line: an unknown
/// extension, a manifest that breaks a rule, a named file that is missing.
pub(super) fn load(file: &Path) -> anyhow::Result<Loaded> {
    let shown = file.display();
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let is_toml = match extension.as_deref() {
        Some("toml") => true,
        Some("json") => false,
        _ => bail!("{shown}: a manifest file ends in .toml or .json"),
    };
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {shown}"))?
        .len();
    if size > MAX_MANIFEST_BYTES as u64 {
        bail!("{shown}: a manifest is at most {MAX_MANIFEST_BYTES} bytes (this one is {size})");
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {shown}"))?;
    let mut warnings = Vec::new();
    let manifest = if is_toml {
        let text = String::from_utf8(bytes).with_context(|| format!("{shown} is not UTF-8"))?;
        Manifest::from_toml(&text).with_context(|| format!("{shown}"))?
    } else {
        match seed_body(&bytes) {
            Some(seed) => {
                let translated = SeedDeploy::from_value(seed)
                    .and_then(|seed| seed.to_manifest())
                    .with_context(|| format!("{shown}"))?;
                warnings = translated.warnings;
                translated.manifest
            }
            None => Manifest::from_json(&bytes).with_context(|| format!("{shown}"))?,
        }
    };

    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut blobs = Vec::new();
    for field in [
        BlobField::WasmModule,
        BlobField::ContainerArchive,
        BlobField::ProcessBinary,
    ] {
        let Some(text) = field.get(&manifest) else {
            continue;
        };
        // The manifest validated, so every reference parses.
        let Ok(BlobRef::Path(relative)) = BlobRef::parse(text) else {
            continue;
        };
        let path = dir.join(relative);
        if !path.is_file() {
            bail!(
                "{shown}: {}: '{relative}' is not a file next to the manifest (looked for {})",
                field.name(),
                path.display()
            );
        }
        blobs.push(LocalBlob {
            field,
            given: relative.to_string(),
            path,
        });
    }
    Ok(Loaded {
        manifest,
        blobs,
        warnings,
    })
}

/// The file's JSON when it is a seed body rather than a manifest; `None` for a manifest, and for
/// anything that is not JSON (the manifest's parser says what is wrong with it).
fn seed_body(bytes: &[u8]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    is_seed_form(&value).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "blake3:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn paths_resolve_against_the_manifest_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app/build/hello.wasm", "\0asm");
        let file = write(
            dir.path(),
            "app/hello.toml",
            "name = \"hello\"\nversion = \"1.0.0\"\nreplicas = 2\n[wasm]\nmodule = \"build/hello.wasm\"\n",
        );
        let Loaded {
            manifest, blobs, ..
        } = load(&file).unwrap();
        assert_eq!(manifest.replicas, 2);
        assert_eq!(
            blobs,
            [LocalBlob {
                field: BlobField::WasmModule,
                given: "build/hello.wasm".into(),
                path: dir.path().join("app").join("build/hello.wasm"),
            }]
        );

        // Replaced by its hash, the manifest is what the API takes.
        let mut manifest = manifest;
        BlobField::WasmModule.set(&mut manifest, HASH.parse().unwrap());
        assert_eq!(manifest.wasm.as_ref().unwrap().module, HASH);
        manifest.validate_for_api().unwrap();
    }

    #[test]
    fn a_missing_module_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "hello.toml",
            "name = \"hello\"\nversion = \"1\"\n[wasm]\nmodule = \"missing.wasm\"\n",
        );
        let error = format!("{:#}", load(&file).unwrap_err());
        assert!(error.contains("wasm.module"), "{error}");
        assert!(error.contains("'missing.wasm' is not a file"), "{error}");
        assert!(!error.contains('\n'), "{error}");

        // A directory is not a module either.
        std::fs::create_dir(dir.path().join("missing.wasm")).unwrap();
        assert!(load(&file).is_err());
    }

    #[test]
    fn archives_resolve_and_hashes_stay() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.tar", "tar");
        let file = write(
            dir.path(),
            "web.json",
            r#"{"name": "web", "version": "2", "container": {"archive": "app.tar", "port": 8080}}"#,
        );
        let blobs = load(&file).unwrap().blobs;
        assert_eq!(blobs.len(), 1);
        assert_eq!(blobs[0].field, BlobField::ContainerArchive);
        assert_eq!(blobs[0].path, dir.path().join("app.tar"));

        let file = write(
            dir.path(),
            "hashed.json",
            &format!(r#"{{"name": "web", "version": "2", "wasm": {{"module": "{HASH}"}}}}"#),
        );
        let Loaded {
            manifest, blobs, ..
        } = load(&file).unwrap();
        assert!(blobs.is_empty());
        assert_eq!(manifest.wasm.unwrap().module, HASH);
    }

    #[test]
    fn a_seed_body_is_translated_with_its_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "seed.json",
            r#"{"name":"database-app","version":"2.1.0","image":"postgres:15-alpine","replicas":1,
                "resource_requirements":{"memory":"1G","cpu":"2.0","storage":"5G"},
                "runtime_config":{"environment":{"POSTGRES_DB":"myapp"}},
                "network_config":{"ports":{"5432/tcp":{"HostPort":"5432"}}}}"#,
        );
        let loaded = load(&file).unwrap();
        assert!(loaded.blobs.is_empty());
        assert_eq!(loaded.manifest.resources.memory_mb, 1024);
        assert_eq!(loaded.manifest.env["POSTGRES_DB"], "myapp");
        assert_eq!(loaded.manifest.ports.len(), 1);
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].starts_with("resource_requirements.storage"));
        loaded.manifest.validate_for_api().unwrap();

        let source = write(
            dir.path(),
            "source.json",
            r#"{"name":"python-api","version":"1.0.0","source_code_hash":"sha256:abc"}"#,
        );
        let error = format!("{:#}", load(&source).unwrap_err());
        assert!(error.contains("source.json"), "{error}");
        assert!(error.contains("not available yet"), "{error}");

        let bad = write(
            dir.path(),
            "bad.json",
            r#"{"name":"web","version":"1","image":"nginx","resource_requirements":{"memory":"lots"}}"#,
        );
        let error = format!("{:#}", load(&bad).unwrap_err());
        assert!(error.contains("resource_requirements.memory"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = write(dir.path(), "app.yaml", "name: x");
        let error = format!("{:#}", load(&yaml).unwrap_err());
        assert!(error.contains(".toml or .json"), "{error}");

        let invalid = write(
            dir.path(),
            "bad.toml",
            "name = \"Bad_Name\"\nversion = \"1\"\n[wasm]\nmodule = \"x.wasm\"\n",
        );
        let error = format!("{:#}", load(&invalid).unwrap_err());
        assert!(error.contains("name: must be a DNS label"), "{error}");

        let outside = write(
            dir.path(),
            "outside.toml",
            "name = \"x\"\nversion = \"1\"\n[wasm]\nmodule = \"../x.wasm\"\n",
        );
        let error = format!("{:#}", load(&outside).unwrap_err());
        assert!(error.contains("'..'"), "{error}");

        let missing = dir.path().join("nope.toml");
        let error = format!("{:#}", load(&missing).unwrap_err());
        assert!(error.contains("nope.toml"), "{error}");

        let big = write(dir.path(), "big.json", &" ".repeat(MAX_MANIFEST_BYTES + 1));
        let error = format!("{:#}", load(&big).unwrap_err());
        assert!(error.contains("at most"), "{error}");
    }
}
