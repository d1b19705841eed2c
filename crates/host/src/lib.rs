//! What this machine offers the mesh: its resources (cores, memory, disk under the data dir) and
//! the runtimes it can honestly run. Measured, never assumed: `docker` is offered only when a
//! Docker engine answers its ping.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mycel_protocol::{Resources, Runtime};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

/// Measures the machine now: cores, total and available memory, free disk where `data_dir` lives.
pub fn measure(data_dir: &Path) -> Resources {
    let (memory_mb, memory_free_mb) = memory_mb().unwrap_or((0, 0));
    Resources {
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_mb,
        memory_free_mb,
        disk_free_mb: disk_free_mb(data_dir).unwrap_or(0),
    }
}

/// Total and available memory from `/proc/meminfo`, in MiB.
fn memory_mb() -> Option<(u64, u64)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&meminfo)
}

fn parse_meminfo(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some((field("MemTotal:")? / 1024, field("MemAvailable:")? / 1024))
}

fn disk_free_mb(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize) / (1024 * 1024))
}

/// The Docker engine's socket: `DOCKER_HOST` when it is a `unix://` path, else the default.
pub fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// True when a Docker engine answers `GET /_ping` on `socket` within `timeout`.
pub async fn docker_answers(socket: &Path, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, ping_docker(socket))
        .await
        .unwrap_or(false)
}

async fn ping_docker(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket).await else {
        return false;
    };
    let request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    if stream.take(4096).read_to_end(&mut answer).await.is_err() {
        return false;
    }
    let answer = String::from_utf8_lossy(&answer);
    answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.trim_end().ends_with("OK")
}

/// The runtimes this host may run: `wasm` always (it is built in), `docker` when the engine
/// answers, `process` on Linux (its driver then proves a sandbox starts before it is offered).
pub async fn detect_runtimes() -> Vec<Runtime> {
    let mut runtimes = vec![Runtime::Wasm];
    if docker_answers(&docker_socket(), Duration::from_secs(2)).await {
        runtimes.push(Runtime::Docker);
    }
    if cfg!(target_os = "linux") {
        runtimes.push(Runtime::Process);
    }
    runtimes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let sample =
            "MemTotal:       24576000 kB\nMemFree:   100 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(parse_meminfo(sample), Some((24000, 12000)));
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn measures_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let r = measure(dir.path());
        assert!(r.cpu_cores >= 1);
        assert!(r.memory_mb > 0 && r.memory_free_mb <= r.memory_mb);
        assert!(r.disk_free_mb > 0);
    }

    #[tokio::test]
    async fn docker_is_absent_when_nothing_listens() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!docker_answers(&dir.path().join("no.sock"), Duration::from_millis(200)).await);
    }

    #[tokio::test]
    async fn docker_is_present_when_the_engine_pings_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
                .await
                .unwrap();
        });
        assert!(docker_answers(&path, Duration::from_secs(2)).await);
    }
}
