//! Text people and files hand a node: app manifests (TOML from the CLI, JSON through the API),
//! image records (JSON blobs a node reads back), join tickets.

use mycel_protocol::{Manifest, image::ImageRecord, ticket::JoinTicket};

/// A manifest as a TOML file and as a JSON body, and an image record as JSON. A manifest the CLI
/// reads must reach the API unchanged: what `from_toml` accepts, `from_json` accepts too.
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(manifest) = Manifest::from_toml(text)
    {
        let _ = manifest.validate_for_api();
        let json = serde_json::to_vec(&manifest).expect("a manifest serializes");
        let again = Manifest::from_json(&json)
            .unwrap_or_else(|e| panic!("a TOML manifest does not read back as JSON: {e}"));
        assert_eq!(again, manifest, "a manifest changed on its way to the API");
    }
    if let Ok(manifest) = Manifest::from_json(data) {
        let _ = manifest.validate_for_api();
        let _ = manifest.kind();
    }
    if let Ok(record) = serde_json::from_slice::<ImageRecord>(data) {
        let _ = record.size();
        let _ = mycel_protocol::image::normalize_image_name(&record.name);
    }
}

/// A join ticket as `mycel up --join` reads it. First byte even: the text as is; odd: the rest
/// is a ticket's body (version byte and CBOR), written as a ticket with a valid checksum, so the
/// fuzzer gets past the checksum.
pub fn ticket(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        ticket_text(rest)
    };
    if let Ok(ticket) = text.parse::<JoinTicket>() {
        let again: JoinTicket = ticket
            .to_string()
            .parse()
            .expect("a ticket this node writes reads back");
        assert_eq!(again.to_string(), ticket.to_string());
        let _ = ticket.dial_addrs();
    }
}

/// `mycel` and the base32 of `payload` followed by its CRC-32, as tickets are written.
fn ticket_text(payload: &[u8]) -> String {
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&crc32(payload).to_be_bytes());
    format!("mycel{}", base32(&bytes))
}

/// CRC-32 (IEEE), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// RFC 4648 base32, lower case, no padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let toml = "name = \"hello\"\nversion = \"1.0.0\"\nreplicas = 2\n\n[wasm]\nmodule = \"hello.wasm\"\n\n[env]\nGREETING = \"hi\"\n\n[resources]\nmemory_mb = 64\ncpu = 0.25\n\n[health]\npath = \"/\"\n";
    let container = "name = \"web\"\nversion = \"2\"\n[container]\nimage = \"nginx:1.27\"\nport = 8080\ncommand = [\"/app\", \"--flag\"]\n[placement]\nstrategy = \"spread\"\nrequired = [{ key = \"zone\", op = \"in\", values = [\"a\"] }]\n";
    let json = serde_json::to_vec(&Manifest::from_toml(toml).expect("a valid sample")).unwrap();
    let record = serde_json::json!({
        "name": "hello:1",
        "config": {"digest": format!("sha256:{}", "a".repeat(64)), "hash": format!("blake3:{}", "b".repeat(64)), "size": 120},
        "layers": [{"digest": format!("sha256:{}", "c".repeat(64)), "hash": format!("blake3:{}", "d".repeat(64)), "size": 4096, "diff_id": format!("sha256:{}", "e".repeat(64))}]
    });
    let peer = super::key(1).public().to_peer_id();
    let addr: libp2p::Multiaddr = "/ip4/192.168.1.20/tcp/7400".parse().unwrap();
    let open = JoinTicket::new(peer, std::slice::from_ref(&addr), None);
    let private = JoinTicket::new(
        peer,
        &[addr],
        Some(mycel_protocol::ticket::MeshSecret::from_bytes([9; 32])),
    );
    let text_seed = |ticket: &JoinTicket| {
        let mut bytes = vec![0];
        bytes.extend_from_slice(ticket.to_string().as_bytes());
        bytes
    };
    vec![
        (
            "manifest",
            "wasm.toml".to_string(),
            toml.as_bytes().to_vec(),
        ),
        (
            "manifest",
            "container.toml".to_string(),
            container.as_bytes().to_vec(),
        ),
        ("manifest", "wasm.json".to_string(), json),
        (
            "manifest",
            "image-record.json".to_string(),
            record.to_string().into_bytes(),
        ),
        ("ticket", "open".to_string(), text_seed(&open)),
        ("ticket", "private".to_string(), text_seed(&private)),
    ]
}
