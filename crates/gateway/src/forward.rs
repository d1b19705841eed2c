//! The headers a proxied request and its answer get or lose on their way through the gateway.
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and never cross the proxy.
//! - The app learns the client: `x-forwarded-for` gets the client's address appended, and
//!   `forwarded` (RFC 7239) gets `for=<ip>;host=<host>;proto=http` appended.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The hop-by-hop headers every proxy drops.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Drops the hop-by-hop headers, and those the `Connection` header names. `Upgrade` goes too:
/// the gateway does not tunnel upgraded connections.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Tells the app who the client is: appends to `x-forwarded-for` and `forwarded`.
pub fn add_client(headers: &mut HeaderMap, client: IpAddr, host: &str) {
    let client = client.to_canonical();
    append(headers, FORWARDED_FOR, &client.to_string());
    append(headers, header::FORWARDED, &forwarded_element(client, host));
}

/// One `forwarded` element: `for=<ip>;host=<host>;proto=http`, IPv6 and a host that is not a
/// token quoted as RFC 7239 requires.
pub fn forwarded_element(client: IpAddr, host: &str) -> String {
    let node = match client.to_canonical() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut element = format!("for={node}");
    if !host.is_empty() {
        element.push_str(";host=");
        element.push_str(&token_or_quoted(host));
    }
    element.push_str(";proto=http");
    element
}

/// Appends `value` to the comma-separated list in `name`, joining every line it had into one.
fn append(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let mut joined: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    joined.push(value);
    match HeaderValue::from_str(&joined.join(", ")) {
        Ok(v) => {
            headers.insert(name, v);
        }
        // Not reachable with the values above (ASCII); keep what was there rather than lose it.
        Err(_) => tracing::debug!(header = %name, "not appending an unrepresentable value"),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token_or_quoted(value: &str) -> String {
    if value.bytes().all(is_tchar) {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_the_client_to_both_headers() {
        let mut h = HeaderMap::new();
        add_client(&mut h, "10.0.0.7".parse().unwrap(), "hello.localhost");
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(
            h["forwarded"],
            "for=10.0.0.7;host=hello.localhost;proto=http"
        );

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.append("x-forwarded-for", "5.6.7.8".parse().unwrap());
        h.insert("forwarded", "for=1.2.3.4".parse().unwrap());
        add_client(&mut h, "10.0.0.7".parse().unwrap(), "hello.localhost");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.0.0.7");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["forwarded"],
            "for=1.2.3.4, for=10.0.0.7;host=hello.localhost;proto=http"
        );
    }

    #[test]
    fn quotes_ipv6_and_hosts_with_a_port() {
        assert_eq!(
            forwarded_element("2001:db8::1".parse().unwrap(), "hello.localhost:8080"),
            "for=\"[2001:db8::1]\";host=\"hello.localhost:8080\";proto=http"
        );
        // An IPv4 client on a dual-stack socket is shown as IPv4.
        assert_eq!(
            forwarded_element("::ffff:10.0.0.7".parse().unwrap(), "a.b"),
            "for=10.0.0.7;host=a.b;proto=http"
        );
        let mut h = HeaderMap::new();
        add_client(&mut h, "::ffff:10.0.0.7".parse().unwrap(), "a.b");
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(token_or_quoted("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn drops_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-length", "x-kept"]);
    }
}
