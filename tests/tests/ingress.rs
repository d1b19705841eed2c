//! Published TCP ports (`[[ports]]`) and the seed's API, end to end against the real Docker
//! engine: every node listens at each published port on its own ingress address (127.0.0.11,
//! .12, .13 here) and hands each connection to an instance, on its own node or over the mesh.
//!
//! The seed's examples run in the order its README gives them, through the seed's paths, with
//! its images tagged locally under the seed's names (see `docker::seed_images`).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, ensure};
use mycel_tests::{
    Mesh, NodeProcess,
    docker::{docker, remove_containers_of, seed_images},
    hello_container_example, metrics, wait_until,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// Three nodes, each with its own ingress address `127.0.0.<base + i>`.
async fn mesh_with_ingress(base: u8) -> Result<Mesh> {
    let hub = NodeProcess::builder("n0")
        .ingress(format!("127.0.0.{base}"))
        .start()
        .await?;
    let mut nodes = vec![];
    for i in 1..3u8 {
        let node = NodeProcess::builder(format!("n{i}"))
            .join(&hub)
            .ingress(format!("127.0.0.{}", base + i))
            .start()
            .await?;
        nodes.push(node);
    }
    nodes.insert(0, hub);
    let mesh = Mesh::from_nodes(nodes);
    mesh.wait_converged(Duration::from_secs(30)).await?;
    Ok(mesh)
}

fn ingress(base: u8, i: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, base + i], port))
}

/// `GET /` as raw HTTP/1.1 over a TCP connection to `addr` (a published port): the answer.
async fn http_over_tcp(addr: SocketAddr) -> Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer))
        .await
        .context("no answer within 5 s")??;
    Ok(answer)
}

/// A connection to the TCP echo app at `addr`: its greeting line, and the stream after it.
async fn echo_connection(addr: SocketAddr) -> Result<(String, BufReader<TcpStream>)> {
    let tcp = TcpStream::connect(addr).await?;
    let mut reader = BufReader::new(tcp);
    let mut greeting = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut greeting))
        .await
        .context("no greeting within 5 s")??;
    ensure!(!greeting.is_empty(), "closed before its greeting");
    Ok((greeting, reader))
}

/// Sends `line` and reads it back.
async fn echo(reader: &mut BufReader<TcpStream>, line: &str) -> Result<String> {
    reader.get_mut().write_all(line.as_bytes()).await?;
    let mut back = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut back))
        .await
        .context("no echo within 5 s")??;
    Ok(back)
}

/// Waits until nothing listens at `addr` any more.
async fn closed(addr: SocketAddr) -> Result<()> {
    wait_until(
        &format!("{addr} to be closed"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || Ok(TcpStream::connect(addr).await.is_err()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_examples_run_through_its_api_and_every_nodes_ingress() -> Result<()> {
    seed_images()?;
    const BASE: u8 = 10;
    let mesh = mesh_with_ingress(BASE + 1).await?;
    let result = async {
        let seed = |body: Value| {
            let node = &mesh[0];
            async move {
                node.send_json(Method::POST, "/api/apps/deploy_app", &body)
                    .await
            }
        };
        // The README's own deploy example: nginx on 80, published at 8080.
        let (status, answer) = seed(json!({
            "name": "my-web-app", "version": "1.0.0", "image": "nginx:alpine", "replicas": 3,
            "resource_requirements": {"memory": "256m", "cpu": "0.5"},
            "network_config": {"ports": {"80/tcp": {"HostPort": "8080"}}}
        }))
        .await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        ensure!(answer["app_id"] == "my-web-app", "{answer}");
        mesh[1].wait_running("my-web-app", 3).await?;
        for i in 0..3 {
            let addr = ingress(BASE, i + 1, 8080);
            let answer = wait_answer(addr).await?;
            ensure!(
                answer.contains("hello from a mycel container"),
                "{addr}: {answer}"
            );
        }

        // Example 1 publishes 8080 too: taken.
        let hello_world = json!({
            "name": "hello-world", "version": "1.0.0", "image": "nginx:alpine", "replicas": 2,
            "network_config": {"ports": {"80/tcp": {"HostPort": "8080"}}}
        });
        let (status, answer) = seed(hello_world.clone()).await?;
        ensure!(status == StatusCode::CONFLICT, "{status} {answer}");
        ensure!(answer["code"] == "port_taken", "{answer}");
        ensure!(
            mesh[0].app("hello-world").await.is_err(),
            "a refused deploy changed nothing"
        );
        // Stopped through the seed's path (through n0: unsigned requests act as its key, which
        // owns the app), the port closes on every node; then it is free.
        let (status, answer) = mesh[0]
            .send_json(
                Method::POST,
                "/api/apps/stop_app",
                &json!({"app_id": "my-web-app"}),
            )
            .await?;
        ensure!(status == StatusCode::OK, "{status} {answer}");
        for i in 0..3 {
            closed(ingress(BASE, i + 1, 8080)).await?;
        }
        let (status, answer) = seed(hello_world).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        mesh[0].wait_running("hello-world", 2).await?;
        wait_answer(ingress(BASE, 3, 8080)).await?;

        // Example 2 builds from source: not yet, and it says so.
        let (status, answer) = seed(json!({
            "name": "python-api", "version": "1.0.0", "source_code_hash": "sha256:abc123...",
            "build_config": {"runtime": "python", "version": "3.12"}, "replicas": 3,
            "resource_requirements": {"memory": "512m", "cpu": "1.0"}
        }))
        .await?;
        ensure!(
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{status} {answer}"
        );
        ensure!(answer["code"] == "source_deploy_unsupported", "{answer}");

        // Example 3: a database, which is not HTTP, reached through every node.
        let (status, answer) = seed(json!({
            "name": "database-app", "version": "2.1.0", "image": "postgres:15-alpine",
            "replicas": 1,
            "resource_requirements": {"memory": "1G", "cpu": "2.0", "storage": "5G"},
            "runtime_config": {"environment": {
                "POSTGRES_DB": "myapp", "POSTGRES_USER": "appuser",
                "POSTGRES_PASSWORD": "secretpassword"
            }},
            "network_config": {"ports": {"5432/tcp": {"HostPort": "5432"}}}
        }))
        .await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        ensure!(
            answer["warnings"].to_string().contains("storage"),
            "storage is reported unused: {answer}"
        );
        mesh[0].wait_running("database-app", 1).await?;
        for i in 0..3 {
            let addr = ingress(BASE, i + 1, 5432);
            let (greeting, mut connection) = wait_echo(addr).await?;
            ensure!(
                greeting == "hello from myapp on port 5432\n",
                "{addr}: {greeting:?}"
            );
            ensure!(echo(&mut connection, "select 1;\n").await? == "select 1;\n");
        }
        let text = mesh[1].metrics().await?;
        let connections = metrics::value(
            &text,
            "mycel_ingress_connections_total",
            &[("app", "database-app")],
        );
        ensure!(connections >= 1.0, "connections: {connections}");
        let received = metrics::value(
            &text,
            "mycel_ingress_bytes_received_total",
            &[("app", "database-app")],
        );
        ensure!(received >= 10.0, "bytes received: {received}");

        // List, status and scale through the seed's paths.
        let (status, list) = mesh[1]
            .send_json(Method::GET, "/api/apps/list_apps", &Value::Null)
            .await?;
        ensure!(status == StatusCode::OK, "{status} {list}");
        let names: Vec<&str> = list["apps"]
            .as_array()
            .context("apps")?
            .iter()
            .filter_map(|a| a["app_id"].as_str())
            .collect();
        ensure!(names == ["database-app", "hello-world"], "{list}");
        let (status, answer) = mesh[0]
            .send_json(
                Method::POST,
                "/api/apps/scale_app",
                &json!({"app_id": "hello-world", "replicas": 3}),
            )
            .await?;
        ensure!(status == StatusCode::OK, "{status} {answer}");
        mesh[2].wait_running("hello-world", 3).await?;
        let (status, answer) = mesh[0]
            .send_json(
                Method::GET,
                "/api/apps/get_app_status?app_id=hello-world",
                &Value::Null,
            )
            .await?;
        ensure!(status == StatusCode::OK, "{status} {answer}");
        ensure!(
            answer["status"] == "running" && answer["running"] == 3,
            "{answer}"
        );
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

/// A raw `GET /` at `addr` once an instance behind it answers.
async fn wait_answer(addr: SocketAddr) -> Result<String> {
    let mut answer = String::new();
    wait_until(
        &format!("an answer at {addr}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            answer = http_over_tcp(addr).await?;
            ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            Ok(true)
        },
    )
    .await?;
    Ok(answer)
}

/// An echo connection at `addr` once an instance behind it takes one.
async fn wait_echo(addr: SocketAddr) -> Result<(String, BufReader<TcpStream>)> {
    let mut opened = None;
    wait_until(
        &format!("a TCP echo at {addr}"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || {
            opened = Some(echo_connection(addr).await?);
            Ok(true)
        },
    )
    .await?;
    opened.context("opened")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_through_a_node_ends_with_its_instance_and_a_new_one_works() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    const BASE: u8 = 20;
    let mesh = mesh_with_ingress(BASE + 1).await?;
    let result = async {
        let (status, pushed) = mesh[0].push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "{status} {pushed}");
        let manifest = json!({
            "name": "echo", "version": "1", "replicas": 1,
            "container": {"archive": pushed["hash"], "port": 8080},
            "env": {"TCP_PORTS": "7000"},
            "ports": [{"container": 7000, "published": 17000}]
        });
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        mesh[0].wait_running("echo", 1).await?;
        let status = mesh[0].app("echo").await?;
        let instance = &status.instances[0];
        let runner = mesh.index_of(&instance.node)?;
        let other = (runner + 1) % 3;

        // Through a node that does not run it: over the mesh.
        let addr = ingress(BASE, other as u8 + 1, 17000);
        let (greeting, mut connection) = wait_echo(addr).await?;
        ensure!(greeting == "hello from tcp on port 7000\n", "{greeting:?}");
        ensure!(echo(&mut connection, "one\n").await? == "one\n");

        // Its container dies: the connection closes, and a new one reaches the restarted app.
        let container = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=mycel.instance={}", instance.id),
            "--filter",
            &format!("label=mycel.node={}", instance.node),
        ])?;
        ensure!(!container.is_empty(), "the instance's container");
        docker(&["kill", &container])?;
        let mut rest = String::new();
        let ended = tokio::time::timeout(
            Duration::from_secs(20),
            connection.read_to_string(&mut rest),
        )
        .await
        .context("the connection outlived its instance by 20 s")?;
        ensure!(
            ended.is_err() || rest.is_empty(),
            "the connection ended: {ended:?} {rest:?}"
        );
        let (_, mut again) = wait_echo(addr).await?;
        ensure!(echo(&mut again, "two\n").await? == "two\n");

        // A redeploy that publishes another port moves the listener; removing the app closes it.
        let mut moved = manifest.clone();
        moved["version"] = json!("2");
        moved["ports"][0]["published"] = json!(17001);
        // Through n0: the app is its key's (deployed there unsigned).
        let (status, answer) = mesh[0].deploy(&moved).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        for i in 0..3 {
            closed(ingress(BASE, i + 1, 17000)).await?;
        }
        wait_echo(ingress(BASE, 2, 17001)).await?;
        let (status, answer) = mesh[0]
            .send_json(Method::DELETE, "/v1/apps/echo", &Value::Null)
            .await?;
        ensure!(status.is_success(), "{status} {answer}");
        for i in 0..3 {
            closed(ingress(BASE, i + 1, 17001)).await?;
        }
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_policy_keeps_a_published_port_closed_there_only() -> Result<()> {
    let (archive, _) = hello_container_example()?;
    const BASE: u8 = 30;
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(
        config.path(),
        "[policy]\npublished_ports = [\"20000-20999\"]\n",
    )?;
    let hub = NodeProcess::builder("n0")
        .ingress(format!("127.0.0.{}", BASE + 1))
        .start()
        .await?;
    let strict = NodeProcess::builder("n1")
        .join(&hub)
        .ingress(format!("127.0.0.{}", BASE + 2))
        .arg("--config")
        .arg(config.path().to_str().context("a UTF-8 path")?)
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![hub, strict]);
    let result = async {
        mesh.wait_converged(Duration::from_secs(30)).await?;
        let (status, pushed) = mesh[0].push_image(&archive).await?;
        ensure!(status == StatusCode::CREATED, "{status} {pushed}");
        let manifest = json!({
            "name": "web", "version": "1", "replicas": 1,
            "container": {"archive": pushed["hash"], "port": 8080},
            "ports": [{"container": 8080, "published": 18080}]
        });
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        mesh[0].wait_running("web", 1).await?;
        wait_answer(ingress(BASE, 1, 18080)).await?;
        ensure!(
            TcpStream::connect(ingress(BASE, 2, 18080)).await.is_err(),
            "the strict node does not publish 18080"
        );
        // Bad [[ports]] are refused, and change nothing.
        for (ports, why) in [
            (json!([{"container": 8080, "published": 0}]), "published"),
            (
                json!([{"container": 8080, "published": 18081, "protocol": "udp"}]),
                "udp",
            ),
            (
                json!([{"container": 1, "published": 9}, {"container": 2, "published": 9}]),
                "twice",
            ),
        ] {
            let mut bad = manifest.clone();
            bad["version"] = json!("2");
            bad["ports"] = ports;
            let (status, answer) = mesh[0].deploy(&bad).await?;
            ensure!(status == StatusCode::BAD_REQUEST, "{status} {answer}");
            ensure!(answer.to_string().contains(why), "{answer}");
        }
        ensure!(mesh[0].app("web").await?.version == "1");
        Ok(())
    }
    .await;
    remove_containers_of(&mesh);
    mesh.report(result)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_to_an_app_scaled_to_zero_is_held_while_it_starts() -> Result<()> {
    let node = NodeProcess::builder("n0")
        .ingress("127.0.0.61")
        .start()
        .await?;
    let mesh = Mesh::from_nodes(vec![node]);
    let result = async {
        let binary = mesh[0]
            .push(std::fs::read(mycel_tests::hello_container_binary()?)?)
            .await?;
        let manifest = json!({
            "name": "idle", "version": "1", "replicas": 0,
            "process": {"binary": binary}, "env": {"TCP_PORTS": "7000"},
            "scale": {"min": 0, "max": 1},
            "ports": [{"container": 7000, "published": 17700}]
        });
        let (status, answer) = mesh[0].deploy(&manifest).await?;
        ensure!(status == StatusCode::CREATED, "{status} {answer}");
        // Nothing runs; the port opens all the same.
        let addr = ingress(60, 1, 17700);
        ensure!(mesh[0].app("idle").await?.instances.is_empty());
        let mut tcp = None;
        wait_until(
            "the published port to open",
            Duration::from_secs(10),
            Duration::from_millis(20),
            async || {
                tcp = Some(TcpStream::connect(addr).await?);
                Ok(true)
            },
        )
        .await?;
        // That first connection is held while an instance starts, then served by it.
        let mut connection = BufReader::new(tcp.context("connected")?);
        let mut greeting = String::new();
        tokio::time::timeout(Duration::from_secs(40), connection.read_line(&mut greeting))
            .await
            .context("no greeting within 40 s")??;
        ensure!(greeting == "hello from tcp on port 7000\n", "{greeting:?}");
        ensure!(echo(&mut connection, "woke\n").await? == "woke\n");
        ensure!(mesh[0].app("idle").await?.instances.len() == 1);
        Ok(())
    }
    .await;
    mesh.report(result)
}
