//! mycel's scheduler: decides where each replica of each app runs. Pure and deterministic (see the
//! README for the properties it keeps); the placement group turns its answers into log entries.

mod model;
#[cfg(test)]
mod reference;
mod solve;
#[cfg(test)]
mod tests;

pub use model::{
    AppSpec, LabelRule, NodeState, NodeView, Placement, Problem, Solution, Strategy, Unplaced,
};
pub use solve::solve;
