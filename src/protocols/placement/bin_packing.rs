//! One-dimensional bin packing, the kernel of placement: constructive
//! heuristics (first fit and best fit decreasing) and the Martello–Toth
//! L2 lower bound, so that every packing can say how far it may be from
//! the optimum.

/// A packing: for each item, in the order given, the bin it went to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packing {
    /// `bins_of[item]` is the item's bin, numbered from 0.
    pub bins_of: Vec<usize>,
    /// How many bins it uses.
    pub bins: usize,
}

/// Why items cannot be packed at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackingError {
    #[error("a bin capacity of 0")]
    NoCapacity,
    #[error("item {item} has size {size}, more than the bin capacity {capacity}")]
    TooLarge {
        item: usize,
        size: u64,
        capacity: u64,
    },
}

fn check(sizes: &[u64], capacity: u64) -> Result<(), PackingError> {
    if capacity == 0 {
        return Err(PackingError::NoCapacity);
    }
    match sizes.iter().position(|&size| size > capacity) {
        Some(item) => Err(PackingError::TooLarge {
            item,
            size: sizes[item],
            capacity,
        }),
        None => Ok(()),
    }
}

/// The items' indices, largest first (ties by index, so the order is
/// deterministic).
fn decreasing(sizes: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    order
}

/// First fit decreasing: each item, largest first, into the first bin
/// with room.
pub fn first_fit_decreasing(sizes: &[u64], capacity: u64) -> Result<Packing, PackingError> {
    check(sizes, capacity)?;
    pack_decreasing(sizes, capacity, |free, size| {
        free.iter().position(|&room| room >= size)
    })
}

/// Best fit decreasing: each item, largest first, into the bin it leaves
/// least room in (the first such bin on ties).
pub fn best_fit_decreasing(sizes: &[u64], capacity: u64) -> Result<Packing, PackingError> {
    check(sizes, capacity)?;
    pack_decreasing(sizes, capacity, |free, size| {
        (free.iter().enumerate())
            .filter(|(_, &room)| room >= size)
            .min_by_key(|(bin, &room)| (room - size, *bin))
            .map(|(bin, _)| bin)
    })
}

/// Packs the items largest first, each into the bin `choose` picks among
/// the open bins' free room (a new bin when it picks none).
fn pack_decreasing(
    sizes: &[u64],
    capacity: u64,
    choose: impl Fn(&[u64], u64) -> Option<usize>,
) -> Result<Packing, PackingError> {
    let mut free: Vec<u64> = Vec::new();
    let mut bins_of = vec![0; sizes.len()];
    for item in decreasing(sizes) {
        let size = sizes[item];
        let bin = match choose(&free, size) {
            Some(bin) => bin,
            None => {
                free.push(capacity);
                free.len() - 1
            }
        };
        free[bin] -= size;
        bins_of[item] = bin;
    }
    Ok(Packing {
        bins: free.len(),
        bins_of,
    })
}

/// The simple bound: the total size over the capacity, rounded up.
pub fn lower_bound_l1(sizes: &[u64], capacity: u64) -> usize {
    assert!(capacity > 0, "a bin capacity of 0");
    let total: u64 = sizes.iter().sum();
    total.div_ceil(capacity) as usize
}

/// Martello and Toth's L2 bound (1990): for each threshold K up to half a
/// bin, the items larger than C − K each need a bin of their own; those
/// in (C/2, C − K] too; and the items in [K, C/2] need whatever bins the
/// room left beside the latter does not hold. The best K gives the bound;
/// K = 0 gives at least L1.
pub fn lower_bound_l2(sizes: &[u64], capacity: u64) -> usize {
    assert!(capacity > 0, "a bin capacity of 0");
    let mut thresholds: Vec<u64> = (sizes.iter().copied())
        .filter(|&size| 2 * size <= capacity)
        .collect();
    thresholds.push(0);
    thresholds.sort_unstable();
    thresholds.dedup();
    let bound = |k: u64| -> usize {
        let (mut alone, mut large, mut large_total, mut small_total) = (0, 0, 0u64, 0u64);
        for &size in sizes {
            if size > capacity - k {
                alone += 1;
            } else if 2 * size > capacity {
                large += 1;
                large_total += size;
            } else if size >= k {
                small_total += size;
            }
        }
        let room = large as u64 * capacity - large_total;
        let extra = small_total.saturating_sub(room).div_ceil(capacity) as usize;
        alone + large + extra
    };
    let best = thresholds.into_iter().map(bound).max().unwrap_or(0);
    best.max(lower_bound_l1(sizes, capacity))
}

/// Whether `packing` puts every item in a bin and no bin over `capacity`.
pub fn packing_fits(sizes: &[u64], capacity: u64, packing: &Packing) -> bool {
    if packing.bins_of.len() != sizes.len() {
        return false;
    }
    let mut used = vec![0u64; packing.bins];
    for (item, &bin) in packing.bins_of.iter().enumerate() {
        match used.get_mut(bin) {
            Some(load) => *load += sizes[item],
            None => return false,
        }
    }
    used.iter().all(|&load| load <= capacity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_l2_bound_sees_what_the_total_does_not() {
        // 280 in bins of 100: L1 says 3, but no 60 fits beside a 50.
        let sizes = [60, 60, 60, 50, 50];
        assert_eq!(lower_bound_l1(&sizes, 100), 3);
        assert_eq!(lower_bound_l2(&sizes, 100), 4);
        assert_eq!(first_fit_decreasing(&sizes, 100).unwrap().bins, 4);
        // Pairs that fill a bin exactly: both bounds and both heuristics
        // agree on 3.
        let pairs = [51, 49, 51, 49, 51, 49];
        assert_eq!(lower_bound_l2(&pairs, 100), 3);
        assert_eq!(best_fit_decreasing(&pairs, 100).unwrap().bins, 3);
    }

    #[test]
    fn best_fit_takes_the_tightest_bin_and_first_fit_the_first() {
        // 87, 76 and 58 open three bins; 42 fills the third and 17 goes
        // beside 76 (7 left). The 7 then goes to the first bin with room
        // (13 free) under first fit, to the one it fills under best fit.
        let sizes = [42, 7, 58, 76, 87, 17];
        let first = first_fit_decreasing(&sizes, 100).unwrap();
        let best = best_fit_decreasing(&sizes, 100).unwrap();
        assert_eq!(first.bins_of, vec![2, 0, 2, 1, 0, 1]);
        assert_eq!(best.bins_of, vec![2, 1, 2, 1, 0, 1]);
        assert!(packing_fits(&sizes, 100, &first) && packing_fits(&sizes, 100, &best));
        let over = Packing {
            bins_of: vec![0; 6],
            bins: 1,
        };
        assert!(!packing_fits(&sizes, 100, &over));
    }

    #[test]
    fn items_that_cannot_fit_are_refused_naming_the_item() {
        assert_eq!(
            first_fit_decreasing(&[10, 200], 150),
            Err(PackingError::TooLarge {
                item: 1,
                size: 200,
                capacity: 150
            })
        );
        assert_eq!(best_fit_decreasing(&[1], 0), Err(PackingError::NoCapacity));
        assert_eq!(first_fit_decreasing(&[], 10).unwrap().bins, 0);
        assert_eq!(lower_bound_l2(&[], 10), 0);
    }

    /// The fewest bins, by trying every assignment (small cases only).
    fn optimum(sizes: &[u64], capacity: u64) -> usize {
        fn place(sizes: &[u64], capacity: u64, loads: &mut Vec<u64>, best: &mut usize) {
            let Some((&size, rest)) = sizes.split_first() else {
                *best = (*best).min(loads.len());
                return;
            };
            if loads.len() >= *best {
                return;
            }
            for bin in 0..loads.len() {
                if loads[bin] + size <= capacity {
                    loads[bin] += size;
                    place(rest, capacity, loads, best);
                    loads[bin] -= size;
                }
            }
            loads.push(size);
            place(rest, capacity, loads, best);
            loads.pop();
        }
        let mut best = sizes.len();
        place(sizes, capacity, &mut Vec::new(), &mut best);
        best
    }

    proptest! {
        #[test]
        fn bounds_never_exceed_the_optimum_and_heuristics_never_beat_it(
            sizes in proptest::collection::vec(1u64..=100, 0..9),
        ) {
            let capacity = 100;
            let best = optimum(&sizes, capacity);
            let l2 = lower_bound_l2(&sizes, capacity);
            prop_assert!(lower_bound_l1(&sizes, capacity) <= l2);
            prop_assert!(l2 <= best, "L2 {l2} above the optimum {best} for {sizes:?}");
            let first = first_fit_decreasing(&sizes, capacity).unwrap();
            let tightest = best_fit_decreasing(&sizes, capacity).unwrap();
            for packing in [&first, &tightest] {
                prop_assert!(packing_fits(&sizes, capacity, packing));
                prop_assert!(packing.bins >= best);
            }
            // First fit decreasing never uses more than 11/9 OPT + 6/9
            // (Dósa, 2007).
            prop_assert!(9 * first.bins <= 11 * best + 6);
        }
    }
}
