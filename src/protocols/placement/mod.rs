//! Placement: deciding which node each agent runs on. This is its pure
//! core; so far the one-dimensional bin-packing kernel
//! ([`bin_packing`]: first and best fit decreasing, the L1 and
//! Martello–Toth L2 lower bounds, a packing's validator) and a reader of
//! the standard benchmark instances ([`instances`]).

pub mod bin_packing;
pub mod instances;
