//! The process driver on this host: examples/hello-container's static binary in a sandbox.
//! Without what a sandbox needs (a subordinate uid range for root, newuidmap, libseccomp) these
//! tests fail, saying so: they never pass by skipping. tests/run.sh sets the host up.

mod common;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use common::{get, hello_container_binary};
use mycel_runtime::{
    Driver, Instance, InstanceSpec, ProcessConfig, ProcessDriver, ProcessWorkload, RuntimeError,
    Stream, Workload,
};

struct Node {
    id: String,
    driver: ProcessDriver,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn new(test: &str) -> Node {
        let id = format!("test-{test}-{}", std::process::id());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let driver = ProcessDriver::start(ProcessConfig::new(&id, dir.path()))
            .await
            .unwrap_or_else(|e| panic!("this host cannot run sandboxes (see tests/run.sh): {e}"));
        Node {
            id,
            driver,
            _dir: dir,
        }
    }

    async fn start(&self, spec: InstanceSpec) -> Arc<dyn Instance> {
        self.driver.start(spec).await.expect("the instance starts")
    }
}

fn spec(id: &str, memory_mb: u64) -> InstanceSpec {
    let (binary, binary_hash) = hello_container_binary();
    InstanceSpec {
        instance_id: id.to_owned(),
        app: "hello-process".to_owned(),
        workload: Workload::Process(ProcessWorkload {
            binary,
            binary_hash,
            args: vec![],
            port: 8080,
            tcp_ports: vec![],
        }),
        env: BTreeMap::from([("GREETING".to_owned(), "sandboxed".to_owned())]),
        memory_mb,
        cpu_millis: 500,
        request_timeout: Duration::from_secs(10),
        max_concurrency: 16,
        secrets_dir: None,
        volumes: Vec::new(),
        dependencies: None,
    }
}

/// The pids of this host's processes whose environment names `instance`.
fn processes_of(instance: &str) -> Vec<u32> {
    let marker = format!("MYCEL_INSTANCE={instance}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .any(|v| v == marker.as_bytes())
                .then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_serves_from_its_sandbox_as_nobody_who_matters() {
    let node = Node::new("serves").await;
    let a = node.start(spec("serves-a", 64)).await;
    // Two instances of one app, each on port 8080 of a network of its own.
    let b = node.start(spec("serves-b", 64)).await;
    for instance in [&a, &b] {
        let (status, body) = get(instance.as_ref(), "/").await.unwrap();
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "hello from a mycel container: sandboxed\n")
        );
    }
    let (_, port) = get(a.as_ref(), "/env/PORT").await.unwrap();
    assert_eq!(port, "8080\n");
    let (_, whoami) = get(a.as_ref(), "/whoami").await.unwrap();
    assert!(
        whoami.starts_with("uid=1000 readonly_root=true "),
        "{whoami}"
    );
    let (_, seen) = get(a.as_ref(), "/processes").await.unwrap();
    assert_eq!(seen, "1\n", "it sees its own process only");

    // Outside, it runs as a host uid of root's subordinate range: never root.
    let pids = processes_of("serves-a");
    assert!(!pids.is_empty());
    for pid in &pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let real: u32 = uid.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(real >= 100000, "host uid {real}");
        let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        assert!(caps.ends_with("0000000000000000"), "{caps}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
    }
    assert!(
        a.usage().memory_bytes.is_some_and(|m| m > 0),
        "memory from its cgroup"
    );
    assert!(
        a.logs()
            .recent
            .iter()
            .any(|l| l.stream == Stream::Stdout && l.line == "GET /")
    );

    a.stop().await;
    b.stop().await;
    assert!(
        processes_of("serves-a").is_empty(),
        "nothing left after stop"
    );
    assert!(
        processes_of("serves-b").is_empty(),
        "nothing left after stop"
    );
    assert!(matches!(
        get(a.as_ref(), "/").await,
        Err(RuntimeError::Stopped { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_memory_limit_holds() {
    let node = Node::new("memory").await;
    let instance = node.start(spec("memory-a", 32)).await;
    let (status, _) = get(instance.as_ref(), "/alloc/8").await.unwrap();
    assert_eq!(status.as_u16(), 200, "within its limit");
    let over = get(instance.as_ref(), "/alloc/64").await;
    assert!(
        !matches!(&over, Ok((status, _)) if status.as_u16() == 200),
        "64 MiB under a 32 MiB limit must fail: {over:?}"
    );
    // The kernel killed it: the instance says so, for the agent to restart it at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while instance.ended().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "its end is not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_exits_fails_its_start_with_its_last_lines() {
    let node = Node::new("exits").await;
    let mut bad = spec("exits-a", 64);
    if let Workload::Process(p) = &mut bad.workload {
        // hello-container listens on $PORT; 0 is refused by the driver, a used one by the app.
        p.port = 0;
    }
    let error = node
        .driver
        .start(bad)
        .await
        .err()
        .expect("port 0 is refused");
    assert!(error.to_string().contains("port"), "{error}");

    let mut shell = spec("exits-b", 64);
    let script = tempfile::tempdir().unwrap();
    let path = script.path().join("fails");
    std::fs::write(&path, "#!/bin/sh\necho 'no config found' >&2\nexit 3\n").unwrap();
    if let Workload::Process(p) = &mut shell.workload {
        p.binary = path.clone();
        p.binary_hash = format!(
            "blake3:{}",
            blake3::hash(&std::fs::read(&path).unwrap()).to_hex()
        );
    }
    let error = node
        .driver
        .start(shell)
        .await
        .err()
        .expect("it exits at once");
    let text = error.to_string();
    assert!(text.contains("exited before it listened"), "{text}");
    assert!(text.contains("no config found"), "{text}");
    assert!(processes_of("exits-b").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_marked_as_this_nodes_are_killed() {
    let node = Node::new("orphans").await;
    let kept = node.start(spec("orphans-kept", 64)).await;
    let lost = node.start(spec("orphans-lost", 64)).await;
    assert!(!processes_of("orphans-lost").is_empty());
    let keep = std::collections::BTreeSet::from(["orphans-kept".to_owned()]);
    let removed = node.driver.remove_orphans(keep).await.unwrap();
    assert_eq!(removed, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_of("orphans-lost").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = get(kept.as_ref(), "/").await.unwrap();
    assert_eq!(status.as_u16(), 200, "what was kept still serves");
    kept.stop().await;
    lost.stop().await;
    let _ = &node.id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cancelled_midway_leaves_nothing_running() {
    let node = Node::new("cancelled").await;
    // Never listens: the start waits for its port until it is cancelled.
    let script = tempfile::tempdir().unwrap();
    let path = script.path().join("mute");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").unwrap();
    let mut mute = spec("cancelled-a", 64);
    if let Workload::Process(p) = &mut mute.workload {
        p.binary = path.clone();
        p.binary_hash = format!(
            "blake3:{}",
            blake3::hash(&std::fs::read(&path).unwrap()).to_hex()
        );
    }
    let start = node.driver.start(mute);
    let cancelled = tokio::time::timeout(Duration::from_millis(500), start).await;
    assert!(
        cancelled.is_err(),
        "it never listens, so the start is still waiting"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_of("cancelled-a").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled start's sandbox still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_port_of_its_own_network_is_reached_and_refused_once_stopped() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let node = Node::new("tcp").await;
    let mut with_tcp = spec("tcp-a", 64);
    with_tcp
        .env
        .insert("TCP_PORTS".to_owned(), "7000".to_owned());
    // Its sandbox lets it listen on that port too.
    if let Workload::Process(process) = &mut with_tcp.workload {
        process.tcp_ports = vec![7000];
    }
    let instance = node.start(with_tcp).await;
    // The echo server starts beside the HTTP one; its first connection may come before it listens.
    let mut connection = Err(RuntimeError::Setup("not tried".to_owned()));
    for _ in 0..100 {
        connection = instance.connect(7000).await;
        if connection.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<String> = instance.logs().recent.into_iter().map(|l| l.line).collect();
    let mut reader = BufReader::new(
        connection.unwrap_or_else(|e| panic!("port 7000 of its network: {e}; log: {lines:?}")),
    );
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "hello from tcp on port 7000\n");
    reader.get_mut().write_all(b"ping\n").await.unwrap();
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "ping\n");
    // A port nothing listens on is refused, not reached elsewhere.
    assert!(matches!(
        instance.connect(7001).await,
        Err(RuntimeError::Unreachable { .. })
    ));
    instance.stop().await;
    assert!(matches!(
        instance.connect(7000).await,
        Err(RuntimeError::Stopped { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_secrets_are_files_it_reads() {
    use std::os::unix::fs::PermissionsExt;

    let node = Node::new("secrets").await;
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("db_password"), "hunter2").unwrap();
    std::fs::set_permissions(
        secrets.path().join("db_password"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::set_permissions(secrets.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut with_secrets = spec("secrets-a", 64);
    with_secrets.secrets_dir = Some(secrets.path().to_path_buf());
    let instance = node.start(with_secrets).await;
    let (status, body) = get(instance.as_ref(), "/secret/db_password").await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "hunter2\n"));
    let (status, _) = get(instance.as_ref(), "/secret/other").await.unwrap();
    assert_eq!(status.as_u16(), 404);
    instance.stop().await;
    std::fs::set_permissions(secrets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}
