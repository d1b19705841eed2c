//! The problem the scheduler solves, and its answer.

use std::collections::{BTreeMap, BTreeSet};

use mycel_protocol::{Runtime, app::Relaxation};

/// What the scheduler knows of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub state: NodeState,
    pub runtimes: BTreeSet<Runtime>,
    pub labels: BTreeMap<String, String>,
    /// What the mesh may use on this node (the owner's policy already applied).
    pub memory_mb: u64,
    pub cpu_millis: u64,
    /// The most instances the node's owner allows; `None`: no limit.
    pub max_instances: Option<u32>,
    /// The app owners the node accepts; `None`: any member.
    pub allowed_owners: Option<BTreeSet<String>>,
    /// The relaxations of the container hardening the node's owner allows.
    pub relaxations_allowed: BTreeSet<Relaxation>,
}

impl NodeView {
    /// Whether the node's owner allows every relaxation `app` asks for.
    pub fn allows_relaxations(&self, app: &AppSpec) -> bool {
        app.relaxations.is_subset(&self.relaxations_allowed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Alive,
    /// Not answering lately: keeps its replicas, gets no new ones.
    Suspect,
    /// Dead for this many milliseconds.
    Dead {
        for_ms: u64,
    },
}

/// How to choose among feasible nodes once spreading is satisfied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Most free memory first: spreads load.
    #[default]
    Spread,
    /// Least free memory first: packs nodes, leaves others empty.
    Binpack,
}

/// A rule on a node label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelRule {
    In { key: String, values: Vec<String> },
    NotIn { key: String, values: Vec<String> },
    Exists { key: String },
}

impl LabelRule {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelRule::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            LabelRule::NotIn { key, values } => labels.get(key).is_none_or(|v| !values.contains(v)),
            LabelRule::Exists { key } => labels.contains_key(key),
        }
    }
}

/// What an app needs, per replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSpec {
    pub name: String,
    pub owner: String,
    /// The runtimes that can run it, any one of them (a process app runs on `process`, or on
    /// `docker` wrapped in an image).
    pub runtimes: Vec<Runtime>,
    pub replicas: u32,
    pub memory_mb: u64,
    pub cpu_millis: u64,
    pub required: Vec<LabelRule>,
    pub preferred: Vec<LabelRule>,
    pub strategy: Strategy,
    /// The relaxations of the container hardening the app asks for; only nodes whose owner
    /// allows all of them may run it.
    pub relaxations: BTreeSet<Relaxation>,
    /// Nodes that hold the app's volumes: preferred over every other node (after spreading).
    pub holders: BTreeSet<String>,
    /// How long its replicas wait on a dead node, instead of the problem's `dead_grace_ms` (an
    /// app with volumes waits for them).
    pub grace_ms: Option<u64>,
}

impl AppSpec {
    /// How long a replica of it waits on a dead node before it is placed elsewhere.
    pub fn grace_ms(&self, problem: &Problem) -> u64 {
        self.grace_ms.unwrap_or(problem.dead_grace_ms)
    }

    /// The preference part of a node's rank, smallest best: holding the app's volumes outranks
    /// every preferred rule, and then each rule matched counts one.
    pub(crate) fn unmatched(&self, node: &NodeView) -> usize {
        let matched = self
            .preferred
            .iter()
            .filter(|rule| rule.matches(&node.labels))
            .count();
        let holds = if self.holders.contains(&node.id) {
            self.preferred.len() + 1
        } else {
            0
        };
        usize::MAX - matched - holds
    }

    /// Whether a node offering `offered` has a runtime for it.
    pub fn runs_on(&self, offered: &BTreeSet<Runtime>) -> bool {
        self.runtimes.iter().any(|r| offered.contains(r))
    }
}

/// A sentence on why none of the `alive` nodes may run `app` at all: a relaxation that no owner
/// allows is named, as the one thing to change; otherwise every condition is listed.
pub(crate) fn why_ineligible<'a>(
    app: &AppSpec,
    alive: impl Iterator<Item = &'a NodeView> + Clone,
) -> String {
    let refused = app
        .relaxations
        .iter()
        .find(|r| !alive.clone().any(|n| n.relaxations_allowed.contains(r)));
    if let Some(refused) = refused {
        return format!("no alive node allows {refused} (its owner's policy.container_relax)");
    }
    let relaxations = if app.relaxations.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = app.relaxations.iter().map(|r| r.as_str()).collect();
        format!(", allows {}", names.join(", "))
    };
    format!(
        "no alive node offers runtime {}, meets the required labels{relaxations} and accepts \
         owner {}",
        app.runtimes
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
        app.owner
    )
}

/// A sentence on why none of the eligible nodes has room for another replica of `app`, from
/// each one's room left: `(node, free memory MiB, free millicores, instances placed)`.
pub(crate) fn why_no_room<'a>(
    app: &AppSpec,
    eligible: impl Iterator<Item = (&'a NodeView, u64, u64, u32)>,
) -> String {
    let (mut at_limit, mut short_memory, mut short_cpu) = (0, 0, 0);
    for (node, memory_mb, cpu_millis, instances) in eligible {
        if node.max_instances.is_some_and(|max| instances >= max) {
            at_limit += 1;
        } else if memory_mb < app.memory_mb {
            short_memory += 1;
        } else if cpu_millis < app.cpu_millis {
            short_cpu += 1;
        }
    }
    let mut parts = Vec::new();
    if at_limit > 0 {
        parts.push(format!(
            "{at_limit} at the most instances their owner allows (policy.max_instances)"
        ));
    }
    if short_memory > 0 {
        parts.push(format!(
            "{short_memory} without {} MiB of memory free",
            app.memory_mb
        ));
    }
    if short_cpu > 0 {
        parts.push(format!(
            "{short_cpu} without {} millicores free",
            app.cpu_millis
        ));
    }
    format!("every node that may run it is full: {}", parts.join(", "))
}

/// Replica `replica` of `app` runs on `node`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Placement {
    pub app: String,
    pub replica: u32,
    pub node: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problem {
    pub nodes: Vec<NodeView>,
    pub apps: Vec<AppSpec>,
    /// How long replicas wait on a dead node before they are placed elsewhere.
    pub dead_grace_ms: u64,
}

/// Replicas that could not be placed, and why (for the app's status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    pub app: String,
    pub replicas: u32,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Solution {
    /// Sorted by app, then replica.
    pub placements: Vec<Placement>,
    pub unplaced: Vec<Unplaced>,
}
