//! The fewest bins for small one-dimensional instances, by branch and
//! bound: items largest first, each into an open bin with room (never
//! two bins of equal load, which would only repeat a branch) or a new
//! one, cut wherever the open bins plus what the rest needs beyond their
//! room reach the best packing found. A node budget stands in for a time
//! limit, so the answer is the same on every machine; when it runs out
//! the best packing so far is returned, marked unproven.

use super::bin_packing::Packing;

/// What the search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exact {
    pub packing: Packing,
    /// Whether the search finished, so no packing uses fewer bins.
    pub proven: bool,
    /// Branches it visited.
    pub nodes: u64,
}

struct Search<'a> {
    sizes: &'a [u64],
    order: Vec<usize>,
    capacity: u64,
    lower_bound: usize,
    nodes_max: u64,
    nodes: u64,
    loads: Vec<u64>,
    bins_of: Vec<usize>,
    best: Packing,
}

/// Searches for a packing of `sizes` into bins of `capacity` with fewer
/// bins than `upper` (a packing that fits), stopping at `lower_bound` or
/// after `nodes_max` branches.
pub fn fewest_bins(
    sizes: &[u64],
    capacity: u64,
    upper: &Packing,
    lower_bound: usize,
    nodes_max: u64,
) -> Exact {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let remaining: u64 = sizes.iter().sum();
    let mut search = Search {
        sizes,
        order,
        capacity,
        lower_bound,
        nodes_max,
        nodes: 0,
        loads: Vec::new(),
        bins_of: vec![0; sizes.len()],
        best: upper.clone(),
    };
    let finished = search.best.bins <= lower_bound || search.branch(0, remaining);
    Exact {
        proven: finished,
        nodes: search.nodes,
        packing: search.best,
    }
}

impl Search<'_> {
    /// Places the `depth`-th largest item and the rest; false when the
    /// budget ran out.
    fn branch(&mut self, depth: usize, remaining: u64) -> bool {
        if self.nodes >= self.nodes_max {
            return false;
        }
        self.nodes += 1;
        let Some(&item) = self.order.get(depth) else {
            self.best = Packing {
                bins_of: self.bins_of.clone(),
                bins: self.loads.len(),
            };
            return true;
        };
        let room: u64 = self.loads.iter().map(|&load| self.capacity - load).sum();
        let beyond = remaining.saturating_sub(room).div_ceil(self.capacity) as usize;
        if self.loads.len() + beyond >= self.best.bins || self.best.bins <= self.lower_bound {
            return true;
        }
        let size = self.sizes[item];
        let mut tried: Vec<u64> = Vec::new();
        for bin in 0..self.loads.len() {
            let load = self.loads[bin];
            if load + size > self.capacity || tried.contains(&load) {
                continue;
            }
            tried.push(load);
            self.loads[bin] += size;
            self.bins_of[item] = bin;
            let finished = self.branch(depth + 1, remaining - size);
            self.loads[bin] -= size;
            if !finished {
                return false;
            }
        }
        if self.loads.len() + 1 < self.best.bins {
            self.loads.push(size);
            self.bins_of[item] = self.loads.len() - 1;
            let finished = self.branch(depth + 1, remaining - size);
            self.loads.pop();
            return finished;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::bin_packing::{first_fit_decreasing, lower_bound_l2, packing_fits};
    use super::*;

    #[test]
    fn the_search_proves_what_the_bounds_cannot() {
        // Five 40s in bins of 100: both bounds say 2 (200 over 100), but
        // a bin holds only two of them, so 3 is the fewest and only the
        // search can say so.
        let sizes = [40, 40, 40, 40, 40];
        let start = first_fit_decreasing(&sizes, 100).unwrap();
        let bound = lower_bound_l2(&sizes, 100);
        let exact = fewest_bins(&sizes, 100, &start, bound, 100_000);
        assert_eq!(bound, 2);
        assert!(exact.proven);
        assert!(packing_fits(&sizes, 100, &exact.packing));
        assert_eq!(exact.packing.bins, 3);
    }

    #[test]
    fn a_spent_budget_returns_the_best_so_far_unproven() {
        let sizes: Vec<u64> = (0..40).map(|i| 20 + (i * 37) % 60).collect();
        let start = first_fit_decreasing(&sizes, 150).unwrap();
        let exact = fewest_bins(&sizes, 150, &start, 0, 10);
        assert!(!exact.proven);
        assert_eq!(exact.nodes, 10);
        assert!(packing_fits(&sizes, 150, &exact.packing));
        assert!(exact.packing.bins <= start.bins);
    }
}
