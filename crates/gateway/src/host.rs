//! Which app a request names: `Host: <app>.<domain>`, port ignored, case-insensitive.

/// The app a `Host` value names under `domain`, lowercased; `None` when it names none (another
/// domain, the bare domain, more than one label before it, an IP address).
pub fn app_of_host(host: &str, domain: &str) -> Option<String> {
    let host = host.trim();
    // `name:port`; a bracketed IPv6 literal has colons of its own and names no app anyway.
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    // A fully qualified name may end in a dot.
    let host = host.strip_suffix('.').unwrap_or(host);
    let domain = domain.trim().trim_end_matches('.');
    let cut = host.len().checked_sub(domain.len() + 1)?;
    let (app, rest) = host.split_at_checked(cut)?;
    let suffix = rest.strip_prefix('.')?;
    if app.is_empty() || app.contains('.') || !suffix.eq_ignore_ascii_case(domain) {
        return None;
    }
    Some(app.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::app_of_host;

    fn app(host: &str, domain: &str) -> Option<String> {
        app_of_host(host, domain)
    }

    #[test]
    fn finds_the_app_in_the_host() {
        assert_eq!(
            app("hello.localhost", "localhost").as_deref(),
            Some("hello")
        );
        assert_eq!(
            app("hello.localhost:7402", "localhost").as_deref(),
            Some("hello")
        );
        assert_eq!(
            app("hello.mesh.example", "mesh.example").as_deref(),
            Some("hello")
        );
        assert_eq!(
            app("hello.localhost.", "localhost").as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn is_case_insensitive() {
        assert_eq!(
            app("Hello.LocalHost", "localhost").as_deref(),
            Some("hello")
        );
        assert_eq!(
            app("hello.localhost:80", "LOCALHOST").as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn names_no_app_otherwise() {
        assert_eq!(app("localhost", "localhost"), None);
        assert_eq!(app(".localhost", "localhost"), None);
        assert_eq!(app("a.b.localhost", "localhost"), None);
        assert_eq!(app("hellolocalhost", "localhost"), None);
        assert_eq!(app("hello.other", "localhost"), None);
        assert_eq!(app("", "localhost"), None);
        assert_eq!(app("127.0.0.1:8080", "localhost"), None);
        assert_eq!(app("[::1]:8080", "localhost"), None);
        assert_eq!(
            app("héllo.localhost", "localhost").as_deref(),
            Some("héllo")
        );
        // A multi-byte character where the cut would fall names nothing, and does not panic.
        assert_eq!(app("é", "x"), None);
        assert_eq!(app("aé.x", "x").as_deref(), Some("aé"));
    }
}
