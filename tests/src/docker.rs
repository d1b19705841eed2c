//! The Docker engine, as tests and benches drive it: its CLI, mycel's containers, test images.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, ensure};

/// Runs the docker CLI; answers its stdout.
pub fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    ensure!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Polls `GET /` on `url` (with `host`, when given) until it answers 200; answers the seconds
/// since `started`.
pub async fn first_answer(
    client: &reqwest::Client,
    url: &str,
    host: Option<&str>,
    started: tokio::time::Instant,
) -> Result<f64> {
    loop {
        let mut request = client.get(url);
        if let Some(host) = host {
            request = request.header(reqwest::header::HOST, host);
        }
        if let Ok(response) = request.send().await
            && response.status() == reqwest::StatusCode::OK
        {
            return Ok(started.elapsed().as_secs_f64());
        }
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{url} did not answer within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// `docker run` of `image` with its port 8080 published on loopback, to its first answer: the
/// baseline a container start through mycel is held against. Answers seconds.
pub async fn docker_run_to_first_answer(client: &reqwest::Client, image: &str) -> Result<f64> {
    let started = tokio::time::Instant::now();
    let id = docker(&[
        "run",
        "-d",
        "-e",
        "PORT=8080",
        "-p",
        "127.0.0.1::8080",
        image,
    ])?;
    let port = docker(&["port", &id, "8080/tcp"])?;
    let addr = port.lines().next().context("a published port")?.to_owned();
    let elapsed = first_answer(client, &format!("http://{addr}/"), None, started).await;
    docker(&["rm", "-f", &id])?;
    elapsed
}

/// The containers (running or not) that mycel made for `node`.
pub fn containers_of(node: &str) -> Result<BTreeSet<String>> {
    let ids = docker(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=mycel.node={node}"),
    ])?;
    Ok(ids.lines().map(str::to_owned).collect())
}

/// Builds an image `FROM` the example's with one more layer of `extra` random bytes, saves it
/// into `dir` and removes it from the engine (so a node must load it); answers the archive.
pub fn layered_image(dir: &Path, tag: &str, extra: usize) -> Result<PathBuf> {
    let context = dir.join("context");
    std::fs::create_dir_all(&context)?;
    // Bytes unique to this tag (and so to the run): the layer is new to the engine.
    let mut bytes = vec![0u8; extra];
    blake3::Hasher::new()
        .update(tag.as_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::File::create(context.join("extra.bin"))?.write_all(&bytes)?;
    std::fs::write(
        context.join("Dockerfile"),
        "FROM mycel-hello-container:1.0\nCOPY extra.bin /extra.bin\n",
    )?;
    let out = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "--tag", tag])
        .arg(&context)
        .output()?;
    ensure!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = dir.join("layered.tar");
    docker(&["save", "--output", archive.to_str().context("UTF-8")?, tag])?;
    docker(&["rmi", "-f", tag])?;
    Ok(archive)
}

/// Removes every container mycel made for the nodes of `mesh`: the end of a test or bench whose
/// nodes are killed rather than stopped (a graceful stop removes them itself).
pub fn remove_containers_of(mesh: &crate::Mesh) {
    for node in mesh.iter() {
        if let Ok(ids) = containers_of(node.peer_id())
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// The seed's example images, tagged locally under the seed's names (no registry): `nginx:alpine`
/// is examples/hello-container (HTTP on `$PORT`), `postgres:15-alpine` the same binary as a TCP
/// echo server on `$PORT` (`--tcp`: a greeting naming `$POSTGRES_DB`, then every byte back).
pub fn seed_images() -> Result<()> {
    crate::hello_container_example()?;
    docker(&["tag", "mycel-hello-container:1.0", "nginx:alpine"])?;
    let context = tempfile::tempdir().context("a build context")?;
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM mycel-hello-container:1.0\nCMD [\"/hello-container\", \"--tcp\"]\n",
    )?;
    let out = std::process::Command::new("docker")
        .args(["build", "--quiet", "--tag", "postgres:15-alpine"])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .context("running docker build")?;
    ensure!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
