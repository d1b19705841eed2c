//! `Node::start` through its public interface: a start that fails half-way stops what it had
//! started, so an embedding process (or a test) is left with nothing running.

use std::net::{Ipv4Addr, TcpListener};

use mycel_node::{Node, NodeConfig, NodeError};

#[tokio::test(flavor = "multi_thread")]
async fn a_start_that_fails_after_the_mesh_is_up_stops_the_mesh() {
    let dir = tempfile::tempdir().unwrap();
    // The placement group cannot open its store: `placement` is a file, not a directory. That
    // happens after the mesh is listening.
    std::fs::write(dir.path().join("placement"), b"not a directory").unwrap();
    let port = {
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut config = NodeConfig::loopback(dir.path());
    config.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    config.runtimes = Some(vec![]);

    let error = match Node::start(config).await {
        Ok(_) => panic!("a node whose placement store cannot open started"),
        Err(error) => error,
    };
    assert!(matches!(error, NodeError::Placement(_)), "{error}");
    assert!(error.to_string().contains("placement"), "{error}");
    // The mesh it had started is gone: its port is free again, and no node.json says otherwise.
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the mesh's port is free again");
    assert!(!dir.path().join("node.json").exists());
}
