//! What an earlier run of this node left: sandboxed processes whose environment names this
//! node. A sandbox dies with the node that started it (see the module above), so this finds
//! something only when that failed — but a restart must not trust that it never does.

use std::collections::BTreeSet;

use super::{INSTANCE_VAR, NODE_VAR};

/// Kills every process marked as this node's whose instance is not in `keep`; answers how many
/// instances it found.
pub(super) fn kill(node: &str, keep: &BTreeSet<String>) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mine = format!("{NODE_VAR}={node}");
    let mut found = BTreeSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue; // gone meanwhile, or a kernel thread
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&mine.as_bytes()) {
            continue;
        }
        let instance = vars.iter().find_map(|v| {
            let text = std::str::from_utf8(v).ok()?;
            text.strip_prefix(INSTANCE_VAR)?.strip_prefix('=')
        });
        let Some(instance) = instance else {
            continue;
        };
        if keep.contains(instance) {
            continue;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            tracing::info!(
                instance,
                pid = pid.as_raw_nonzero().get(),
                "killed a process an earlier run left"
            );
            found.insert(instance.to_owned());
        }
    }
    found.len()
}
