//! Sandboxed processes as the host sees them: found by the marks mycel sets in their
//! environment (`MYCEL_NODE`, `MYCEL_INSTANCE`).

/// The pids of this host's processes whose environment holds `var=value`.
pub fn marked(var: &str, value: &str) -> Vec<u32> {
    let mark = format!("{var}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .any(|v| v == mark.as_bytes())
                .then_some(pid)
        })
        .collect()
}

/// The host uid of process `pid`, while it runs.
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
