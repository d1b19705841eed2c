//! Shared by the tests and the bench: builds examples/hello once per process.

#![allow(dead_code, unreachable_pub)]

use std::{path::PathBuf, process::Command, sync::OnceLock};

use mycel_runtime::{Body, Instance};

const INSTALL_HINT: &str = "the wasm32-wasip2 Rust target is not installed: run \
     `rustup target add wasm32-wasip2` (tests/run.sh does this)";

/// The path and `blake3:<hex>` of examples/hello's component, built on first use.
pub fn hello() -> (PathBuf, String) {
    static BUILT: OnceLock<Result<(PathBuf, String), String>> = OnceLock::new();
    BUILT
        .get_or_init(build_hello)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_hello() -> Result<(PathBuf, String), String> {
    let dir = package_dir().join("../../examples/hello");
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("finding {}: {e}", dir.display()))?;
    if let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        && out.status.success()
        && !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-wasip2")
    {
        return Err(INSTALL_HINT.to_owned());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(&dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .map_err(|e| format!("running cargo to build examples/hello: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            return Err(INSTALL_HINT.to_owned());
        }
        return Err(format!("building examples/hello failed:\n{stderr}"));
    }
    let wasm = dir.join("target/wasm32-wasip2/release/hello.wasm");
    let bytes = std::fs::read(&wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))?;
    Ok((wasm, format!("blake3:{}", blake3::hash(&bytes).to_hex())))
}

/// A request with a Host header, as the gateway sends them.
pub fn request(method: &str, path: &str, body: Body) -> http::Request<Body> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "hello.localhost")
        .body(body)
        .expect("a valid request")
}

/// Sends `GET path` and reads the whole answer.
pub async fn get(
    instance: &dyn Instance,
    path: &str,
) -> Result<(http::StatusCode, String), mycel_runtime::RuntimeError> {
    use http_body_util::BodyExt;
    let response = instance
        .handle(request("GET", path, mycel_runtime::empty_body()))
        .await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the answer's body")
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// This package's directory: as the test runner says at run time (cargo and nextest set it), so a
/// test binary reused from another checkout still looks in this one; as built, otherwise.
fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// examples/hello-container's image archive (`docker save` of `mycel-hello-container:1.0`),
/// built by its build.sh on first use when missing or older than its sources. Test processes
/// run side by side, so a lock file keeps one building while the others wait (and read only a
/// whole archive).
pub fn hello_container_archive() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build_hello_container)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// examples/hello-container's static binary, and its `blake3:<hex>` (built as its archive is).
pub fn hello_container_binary() -> (PathBuf, String) {
    let archive = hello_container_archive();
    let binary = archive
        .parent()
        .expect("the archive is in target/")
        .join("x86_64-unknown-linux-musl/release/hello-container");
    let bytes =
        std::fs::read(&binary).unwrap_or_else(|e| panic!("reading {}: {e}", binary.display()));
    (binary, format!("blake3:{}", blake3::hash(&bytes).to_hex()))
}

fn build_hello_container() -> Result<PathBuf, String> {
    let dir = package_dir().join("../../examples/hello-container");
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("finding {}: {e}", dir.display()))?;
    let target = dir.join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let lock_path = target.join(".build-lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;

    let archive = target.join("hello-container.tar");
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified());
    let built = modified(&archive).ok();
    let sources = [
        "src/main.rs",
        "Cargo.toml",
        "Cargo.lock",
        "Dockerfile",
        "build.sh",
    ];
    let stale = built.is_none_or(|built| {
        sources
            .iter()
            .any(|s| modified(&dir.join(s)).is_ok_and(|m| m > built))
    });
    if stale {
        let out = Command::new(dir.join("build.sh"))
            .output()
            .map_err(|e| format!("running examples/hello-container/build.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "examples/hello-container/build.sh failed (it needs Docker and `rustup target \
                 add x86_64-unknown-linux-musl`):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(archive)
}
