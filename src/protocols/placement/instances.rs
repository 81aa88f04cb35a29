//! Reading bin-packing instances in OR-Library's text format (J. E.
//! Beasley's `binpack1.txt` … `binpack8.txt`: Falkenauer's uniform and
//! triplet classes). A file holds a count of problems, then for each its
//! name, a line `capacity items best_known`, and one item size a line.
//! Sizes may carry decimals (the triplet files use one); an instance's
//! numbers are scaled to whole numbers by the most decimals any of them
//! has. The files are others' to publish: they are read from a path the
//! user gives, never committed.

/// One instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Its name in the file, e.g. `u120_00`.
    pub name: String,
    /// The bin capacity, scaled as the sizes are.
    pub capacity: u64,
    /// The items' sizes, scaled to whole numbers.
    pub sizes: Vec<u64>,
    /// The fewest bins known, as the file gives it.
    pub best_known: usize,
}

/// What is wrong in a file, and on which line (counted from 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct InstanceError {
    pub line: usize,
    pub what: String,
}

/// Most instances one file may hold, and most items one instance may.
pub const INSTANCES_MAX: usize = 10_000;
pub const ITEMS_MAX: usize = 1_000_000;
/// Most decimals a number may carry.
const DECIMALS_MAX: u32 = 6;

/// Reads every instance of `text`.
pub fn parse(text: &str) -> Result<Vec<Instance>, InstanceError> {
    let mut lines = (text.lines().enumerate())
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty());
    let mut next = |what: &str| {
        lines.next().ok_or_else(|| InstanceError {
            line: text.lines().count() + 1,
            what: format!("the file ends where {what} should be"),
        })
    };
    let (line, count) = next("the count of instances")?;
    let count = whole(line, count, "the count of instances")?;
    if count > INSTANCES_MAX as u64 {
        let what = format!("{count} instances; at most {INSTANCES_MAX} are read");
        return Err(InstanceError { line, what });
    }
    let mut instances = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (_, name) = next("an instance's name")?;
        let (line, header) = next("`capacity items best_known`")?;
        let fields: Vec<&str> = header.split_whitespace().collect();
        let [capacity, items, best_known] = fields[..] else {
            let what = format!("{header:?} is not `capacity items best_known`");
            return Err(InstanceError { line, what });
        };
        let items = whole(line, items, "the item count")?;
        if items > ITEMS_MAX as u64 {
            let what = format!("{items} items; at most {ITEMS_MAX} are read");
            return Err(InstanceError { line, what });
        }
        let best_known = whole(line, best_known, "the best known bin count")? as usize;
        let mut numbers = vec![(line, capacity)];
        for _ in 0..items {
            numbers.push(next("an item's size")?);
        }
        let decimals = (numbers.iter())
            .map(|(_, number)| {
                number
                    .split_once('.')
                    .map_or(0, |(_, fraction)| fraction.len())
            })
            .max()
            .unwrap_or(0) as u32;
        let mut scaled = Vec::with_capacity(numbers.len());
        for (line, number) in numbers {
            scaled.push(fixed_point(line, number, decimals)?);
        }
        let capacity = scaled.remove(0);
        if capacity == 0 {
            let what = format!("instance {name}: a capacity of 0");
            return Err(InstanceError { line, what });
        }
        instances.push(Instance {
            name: name.to_string(),
            capacity,
            sizes: scaled,
            best_known,
        });
    }
    Ok(instances)
}

fn whole(line: usize, text: &str, what: &str) -> Result<u64, InstanceError> {
    text.parse().map_err(|_| InstanceError {
        line,
        what: format!("{what} {text:?} is not a whole number"),
    })
}

/// `text` (digits, perhaps a point and up to `decimals` more) times
/// 10^decimals.
fn fixed_point(line: usize, text: &str, decimals: u32) -> Result<u64, InstanceError> {
    let fail = |why: &str| InstanceError {
        line,
        what: format!("{text:?} {why}"),
    };
    if decimals > DECIMALS_MAX {
        return Err(fail(&format!("has more than {DECIMALS_MAX} decimals")));
    }
    let (units, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(units) || !(fraction.is_empty() || digits(fraction)) {
        return Err(fail("is not a size (digits, perhaps with a decimal point)"));
    }
    let padded = format!("{units}{fraction:0<width$}", width = decimals as usize);
    padded.parse().map_err(|_| fail("is too large"))
}

/// The class of an instance from its name (`u120_00` → `u120`, `t60_07`
/// → `t60`): what comes before the last underscore.
pub fn class_of(name: &str) -> &str {
    name.rsplit_once('_').map_or(name, |(class, _)| class)
}

/// An instance like Falkenauer's uniform class, made from `seed`: `items`
/// sizes uniform in 20..=100, bins of 150. Its best known is unknown (0).
pub fn generate_uniform(seed: u64, items: usize, number: usize) -> Instance {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Instance {
        name: format!("gu{items}_{number:02}"),
        capacity: 150,
        sizes: (0..items).map(|_| rng.gen_range(20..=100)).collect(),
        best_known: 0,
    }
}

/// An instance like Falkenauer's triplet class, made from `seed`: each of
/// `bins` bins of 1000 is filled exactly by three items of 250 to 500 (the
/// first from 380 to 490, the second from 250 to half of what is left,
/// the third the rest), then the items are shuffled; the optimum is
/// `bins`.
pub fn generate_triplets(seed: u64, bins: usize, number: usize) -> Instance {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut sizes = Vec::with_capacity(3 * bins);
    for _ in 0..bins {
        let first = rng.gen_range(380..=490u64);
        let second = rng.gen_range(250..=(1000 - first) / 2);
        sizes.extend([first, second, 1000 - first - second]);
    }
    sizes.shuffle(&mut rng);
    Instance {
        name: format!("gt{}_{number:02}", 3 * bins),
        capacity: 1000,
        sizes,
        best_known: bins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_two_instances_reads_back_scaled() {
        let text =
            " 2\n u4_00\n 150 4 2\n 70\n 80\n 20\n 60\n t3_00\n 100.0 3 1\n 33.3\n 33.4\n 33.3\n";
        let instances = parse(text).unwrap();
        assert_eq!(instances.len(), 2);
        assert_eq!(
            instances[0],
            Instance {
                name: "u4_00".into(),
                capacity: 150,
                sizes: vec![70, 80, 20, 60],
                best_known: 2,
            }
        );
        assert_eq!(instances[1].capacity, 1000);
        assert_eq!(instances[1].sizes, vec![333, 334, 333]);
    }

    #[test]
    fn generated_triplets_fill_their_bins_exactly() {
        let instance = generate_triplets(3, 20, 0);
        assert_eq!(instance.sizes.len(), 60);
        assert_eq!(instance.sizes.iter().sum::<u64>(), 20 * 1000);
        assert!(instance
            .sizes
            .iter()
            .all(|&size| (250..=500).contains(&size)));
        assert_eq!(class_of(&instance.name), "gt60");
        assert_eq!(class_of("u120_19"), "u120");
        let uniform = generate_uniform(3, 120, 1);
        assert!(uniform.sizes.iter().all(|&size| (20..=100).contains(&size)));
        assert_eq!(uniform, generate_uniform(3, 120, 1), "the seed decides");
    }

    #[test]
    fn a_broken_file_is_refused_naming_the_line() {
        for (text, line, what) in [
            ("", 1, "the count of instances"),
            ("x\n", 1, "not a whole number"),
            ("1\nu\n150 2\n", 3, "is not `capacity items best_known`"),
            ("1\nu\n150 2 1\n70\n", 5, "an item's size"),
            ("1\nu\n150 2 1\n70\n-3\n", 5, "is not a size"),
            ("1\nu\n0 1 1\n1\n", 3, "a capacity of 0"),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}: {error}");
            assert!(error.what.contains(what), "{text:?}: {error}");
        }
    }
}
