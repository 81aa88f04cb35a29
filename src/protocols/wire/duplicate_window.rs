//! A sliding window of sequence numbers already seen from one origin, as in
//! IPsec and WireGuard: the highest sequence seen plus a bitmap of the
//! `WINDOW_BITS` below it. Anything older than the window is refused too, so a
//! replay can never slip in after the window has moved on.
//!
//! Admit a sequence number only after its envelope's signature verified:
//! otherwise a forger could move the window and make genuine envelopes look
//! old.

/// How many sequence numbers below the highest the window remembers.
pub const WINDOW_BITS: u64 = 4096;
const WORDS: usize = (WINDOW_BITS / 64) as usize;
const _: () = assert!(WINDOW_BITS % 64 == 0 && WINDOW_BITS >= 64);

/// What the window says about a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Never seen: deliver it.
    Fresh,
    /// Seen before: drop it.
    Duplicate,
    /// Older than the window remembers: drop it, it may be a replay.
    TooOld,
}

#[derive(Clone, Debug)]
pub struct DuplicateWindow {
    highest: Option<u64>,
    /// Bit `i` (word `i / 64`, bit `i % 64`) marks `highest - i` as seen.
    seen: Box<[u64; WORDS]>,
}

impl Default for DuplicateWindow {
    fn default() -> DuplicateWindow {
        DuplicateWindow {
            highest: None,
            seen: Box::new([0; WORDS]),
        }
    }
}

impl DuplicateWindow {
    pub fn new() -> DuplicateWindow {
        DuplicateWindow::default()
    }

    /// Says whether `sequence` is fresh without recording it.
    pub fn check(&self, sequence: u64) -> Admission {
        match self.highest {
            None => Admission::Fresh,
            Some(highest) if sequence > highest => Admission::Fresh,
            Some(highest) if highest - sequence >= WINDOW_BITS => Admission::TooOld,
            Some(highest) if self.get(highest - sequence) => Admission::Duplicate,
            Some(_) => Admission::Fresh,
        }
    }

    /// Records `sequence` and says whether it is fresh.
    pub fn admit(&mut self, sequence: u64) -> Admission {
        let Some(highest) = self.highest else {
            self.highest = Some(sequence);
            self.set(0);
            return Admission::Fresh;
        };
        if sequence > highest {
            self.shift(sequence - highest);
            self.highest = Some(sequence);
            self.set(0);
            return Admission::Fresh;
        }
        let age = highest - sequence;
        if age >= WINDOW_BITS {
            return Admission::TooOld;
        }
        if self.get(age) {
            return Admission::Duplicate;
        }
        self.set(age);
        Admission::Fresh
    }

    fn get(&self, age: u64) -> bool {
        self.seen[(age / 64) as usize] & (1 << (age % 64)) != 0
    }

    fn set(&mut self, age: u64) {
        self.seen[(age / 64) as usize] |= 1 << (age % 64);
    }

    /// Ages every mark by `distance`, forgetting those that fall out.
    fn shift(&mut self, distance: u64) {
        if distance >= WINDOW_BITS {
            self.seen.fill(0);
            return;
        }
        let words = (distance / 64) as usize;
        let bits = (distance % 64) as u32;
        for index in (0..WORDS).rev() {
            let from_high = index
                .checked_sub(words)
                .map_or(0, |source| self.seen[source]);
            let from_low = match index.checked_sub(words + 1) {
                Some(source) if bits > 0 => self.seen[source] >> (64 - bits),
                _ => 0,
            };
            self.seen[index] = if bits > 0 {
                (from_high << bits) | from_low
            } else {
                from_high
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_duplicate() {
        let mut window = DuplicateWindow::new();
        assert_eq!(window.admit(10), Admission::Fresh);
        assert_eq!(window.admit(10), Admission::Duplicate);
        assert_eq!(window.admit(9), Admission::Fresh);
        assert_eq!(window.admit(9), Admission::Duplicate);
        assert_eq!(window.admit(11), Admission::Fresh);
        assert_eq!(window.admit(10), Admission::Duplicate);
    }

    #[test]
    fn too_old_is_refused_even_if_never_seen() {
        let mut window = DuplicateWindow::new();
        assert_eq!(window.admit(WINDOW_BITS + 5), Admission::Fresh);
        assert_eq!(window.admit(5), Admission::TooOld);
        assert_eq!(window.admit(6), Admission::Fresh);
    }

    #[test]
    fn marks_survive_shifts_across_word_boundaries() {
        let mut window = DuplicateWindow::new();
        for sequence in [1, 63, 64, 65, 200, 1000] {
            assert_eq!(window.admit(sequence), Admission::Fresh);
        }
        for sequence in [1, 63, 64, 65, 200, 1000] {
            assert_eq!(
                window.admit(sequence),
                Admission::Duplicate,
                "sequence {sequence}"
            );
        }
        assert_eq!(window.admit(2), Admission::Fresh);
    }

    proptest::proptest! {
        /// Against a model that remembers everything: the window never calls a
        /// new number a duplicate, and never admits a number twice.
        #[test]
        fn agrees_with_a_complete_model(sequences in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut window = DuplicateWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            for sequence in sequences {
                let admission = window.admit(sequence);
                let new = seen.insert(sequence);
                match admission {
                    Admission::Fresh => proptest::prop_assert!(new),
                    Admission::Duplicate => proptest::prop_assert!(!new),
                    Admission::TooOld => {
                        let highest = *seen.iter().next_back().unwrap();
                        proptest::prop_assert!(highest - sequence >= WINDOW_BITS);
                    }
                }
            }
        }
    }
}
