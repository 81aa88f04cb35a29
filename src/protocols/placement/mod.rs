//! Placement: deciding which node each agent runs on. This is its pure
//! core:
//! - [`bin_packing`]: one-dimensional first and best fit decreasing, the
//!   L1 and Martello–Toth L2 lower bounds and a packing's validator;
//!   [`improve`], a seeded local search that closes bins; [`exact`], a
//!   branch and bound with a node budget for small instances;
//! - [`model`]: the problem (capacities and demands in named dimensions,
//!   labels, rules, weights, geography); [`pipeline`], the filter → score
//!   pipeline; [`planner`], batch plans with a latency search, and
//!   rebalancing with the fewest moves; [`validate`], the independent
//!   check every plan passes; [`directory`], the running planner's
//!   decisions on the committed directory of planned agents;
//! - [`instances`]: a reader of the standard benchmark instances.

pub mod bin_packing;
pub mod directory;
pub mod exact;
pub mod improve;
pub mod instances;
pub mod model;
pub mod pipeline;
pub mod planner;
#[cfg(test)]
mod planner_tests;
pub mod validate;
