//! Network namespaces for partition tests: two namespaces ("a" and "b") on one bridge, torn down
//! on drop. Needs root and iproute2 (and iptables for [`Net::isolate_b`]).

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Two namespaces on one bridge, torn down on drop. Addresses are 10.<x>.<y>.0/24, private to this
/// test's own namespaces.
pub struct Net {
    tag: String,
    subnet: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    pub fn new() -> Result<Self> {
        let pid = std::process::id();
        let net = Net {
            tag: format!("my{}", pid % 100_000),
            subnet: format!("10.{}.{}", 200 + (pid % 50), (pid / 50) % 250),
        };
        let (tag, subnet) = (&net.tag, &net.subnet);
        let bridge = format!("{tag}br");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        // Docker's firewall drops forwarded traffic between bridge ports (FORWARD policy DROP
        // with bridge netfilter on); let this test's own bridge through.
        let _ = Command::new("iptables")
            .args(net.forward_rule("-I"))
            .output();
        for side in ["a", "b"] {
            let ns = net.netns(side);
            let (outer, inner) = (format!("{tag}{side}o"), format!("{tag}{side}i"));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.addr(side)),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn forward_rule(&self, action: &str) -> Vec<String> {
        let bridge = format!("{}br", self.tag);
        [
            action, "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
        ]
        .map(String::from)
        .to_vec()
    }

    pub fn netns(&self, side: &str) -> String {
        format!("{}{side}", self.tag)
    }

    pub fn addr(&self, side: &str) -> String {
        let host = if side == "a" { 1 } else { 2 };
        format!("{}.{host}", self.subnet)
    }

    /// Cuts (or restores) side b's only link.
    pub fn link_b(&self, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &format!("{}bo", self.tag), state])
    }
}

impl Net {
    /// Cuts (or restores) the traffic between sides a and b, and only that: the test still
    /// reaches both sides through the bridge.
    pub fn isolate_b(&self, isolated: bool) -> Result<()> {
        let action = if isolated { "-I" } else { "-D" };
        let ns = self.netns("b");
        let a = self.addr("a");
        for (chain, flag) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            let out = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "iptables", action, chain, flag, &a, "-j", "DROP",
                ])
                .output()
                .context("running iptables in the namespace")?;
            if !out.status.success() {
                bail!(
                    "iptables {action} {chain}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }
}

/// True when this process may make namespaces; false (after saying so) when a test should skip.
/// Under CI a test never skips: there, missing root or iproute2 is an error.
pub fn namespaces_or_skip() -> Result<bool> {
    if can_make_namespaces() {
        return Ok(true);
    }
    if std::env::var_os("CI").is_some() {
        bail!("partition tests need root and iproute2, and CI has both");
    }
    eprintln!("skipping: making network namespaces needs root and iproute2");
    Ok(false)
}

/// True when this process may make namespaces (root, with iproute2 installed).
fn can_make_namespaces() -> bool {
    nix::unistd::Uid::effective().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

impl Drop for Net {
    fn drop(&mut self) {
        for side in ["a", "b"] {
            let _ = ip(&["netns", "del", &self.netns(side)]);
            let _ = ip(&["link", "del", &format!("{}{side}o", self.tag)]);
        }
        let _ = ip(&["link", "del", &format!("{}br", self.tag)]);
        let _ = Command::new("iptables")
            .args(self.forward_rule("-D"))
            .output();
    }
}
