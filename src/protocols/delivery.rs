//! Reliable delivery: sequence numbers, end-to-end acknowledgements,
//! retransmission, and per-source rate limits.
//!
//! The origin numbers envelopes per destination node, keeps each one until
//! the destination acknowledges it, and sends it again after a timeout that
//! doubles on every attempt, up to a retry limit; then it gives up and says
//! so (`retries_exhausted`). The timeout follows the acknowledgement round
//! trip measured to that destination, or, until there is one, the round
//! trip measured to every destination: with many destinations each gets
//! few messages, and a loaded cluster whose round trips are seconds would
//! otherwise retransmit every first message at the floor. The sequences a destination has not yet
//! acknowledged never span more than `span_max`, so every retransmission
//! still falls inside the destination's duplicate window — that is what
//! makes delivery exactly-once to the agent while the wire is
//! at-least-once.
//!
//!
//! What a node admits follows what the paths can take ([`Admission`]): its
//! messages awaiting acknowledgement are held to a window that grows while
//! acknowledgements come back as fast as the fastest seen, and shrinks
//! when they slow (queues building somewhere: a saturated CPU, a full
//! link) or a message times out. A sender is refused with
//! [`Refusal::InFlightFull`] before the network is overrun, instead of
//! filling every queue and being retransmitted into collapse.
//!
//! Time is given in milliseconds (microseconds for the token bucket) by the
//! caller.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};

/// A run of acknowledged sequence numbers: `first`, `first + 1`, ...,
/// `first + count - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AckRange {
    pub first: u64,
    pub count: u32,
}

/// Most ranges one acknowledgement carries.
pub const ACK_RANGES_MAX: usize = 1_024;

/// Sorts and compresses sequence numbers into runs.
pub fn to_ranges(sequences: &mut Vec<u64>) -> Vec<AckRange> {
    sequences.sort_unstable();
    sequences.dedup();
    let mut ranges: Vec<AckRange> = Vec::new();
    for &sequence in sequences.iter() {
        match ranges.last_mut() {
            Some(last)
                if last.first + u64::from(last.count) == sequence && last.count < u32::MAX =>
            {
                last.count += 1
            }
            _ => ranges.push(AckRange {
                first: sequence,
                count: 1,
            }),
        }
    }
    ranges
}

/// Why the sender refuses a new message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `inflight_max` messages await acknowledgement.
    InFlightFull,
    /// The destination has not acknowledged an old message, and new
    /// sequence numbers would leave its duplicate window.
    WindowFull,
}

/// The sender's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    pub inflight_max: usize,
    pub span_max: u64,
    /// Floor of the retransmission timeout, which otherwise follows the
    /// measured acknowledgement round trip.
    pub retransmit_timeout_ms: u64,
    pub retransmit_timeout_max_ms: u64,
    /// Sends after the first before giving up.
    pub retries_max: u32,
}

struct Pending<T> {
    item: T,
    attempts: u32,
    due_ms: u64,
    first_sent_ms: u64,
}

struct Destination<T> {
    next_sequence: u64,
    pending: BTreeMap<u64, Pending<T>>,
    round_trip: RoundTrip,
}

/// Smoothed acknowledgement round trip and its variation (RFC 6298), from
/// messages acknowledged after their first send only (Karn).
#[derive(Clone, Copy, Debug, Default)]
struct RoundTrip {
    smoothed_ms: Option<f64>,
    variation_ms: f64,
}

impl RoundTrip {
    /// The retransmission timeout, smoothed + 4 × variation, within the
    /// configured bounds; `fallback`'s when this has no sample yet.
    fn timeout_ms(&self, fallback: &RoundTrip, config: &SenderConfig) -> u64 {
        let measured = if self.smoothed_ms.is_some() {
            self
        } else {
            fallback
        };
        let estimate = measured
            .smoothed_ms
            .map_or(0.0, |smoothed| smoothed + 4.0 * measured.variation_ms);
        (estimate.ceil() as u64).clamp(
            config.retransmit_timeout_ms,
            config.retransmit_timeout_max_ms,
        )
    }

    fn sample(&mut self, round_trip_ms: f64) {
        match self.smoothed_ms {
            None => {
                self.smoothed_ms = Some(round_trip_ms);
                self.variation_ms = round_trip_ms / 2.0;
            }
            Some(smoothed) => {
                self.variation_ms =
                    0.75 * self.variation_ms + 0.25 * (smoothed - round_trip_ms).abs();
                self.smoothed_ms = Some(0.875 * smoothed + 0.125 * round_trip_ms);
            }
        }
    }
}

/// The admission window never shrinks below this (nor past
/// `inflight_max`): enough for a node's agents at a modest rate over slow
/// round trips.
pub const WINDOW_MIN: f64 = 64.0;
/// Where the window starts, growing from there until the first slowdown.
pub const WINDOW_INITIAL: f64 = 256.0;
/// Acknowledgement round trips longer than the fastest seen by more than
/// this mean queues are building.
pub const DELAY_TARGET_MS: f64 = 50.0;
/// What a slowdown or a timeout leaves of the window.
const WINDOW_DECREASE: f64 = 0.75;

/// The admission window over a node's messages awaiting acknowledgement:
/// additive increase while round trips stay within [`DELAY_TARGET_MS`] of
/// the fastest, multiplicative decrease (at most once a round trip) when
/// they do not or a retransmission comes due. It starts in slow start
/// (one more per acknowledgement) until its first decrease.
#[derive(Clone, Copy, Debug)]
struct Admission {
    window: f64,
    /// `inflight_max`, or the floor if that is lower.
    ceiling: f64,
    slow_start: bool,
    fastest_ms: Option<f64>,
    last_decrease_ms: Option<u64>,
}

impl Admission {
    fn new(inflight_max: usize) -> Admission {
        Admission {
            window: WINDOW_INITIAL,
            ceiling: (inflight_max as f64).max(WINDOW_MIN),
            slow_start: true,
            fastest_ms: None,
            last_decrease_ms: None,
        }
    }

    fn acknowledged(&mut self, now_ms: u64, round_trip_ms: f64, smoothed_ms: f64) {
        let fastest = self
            .fastest_ms
            .map_or(round_trip_ms, |fastest| fastest.min(round_trip_ms));
        self.fastest_ms = Some(fastest);
        if round_trip_ms > fastest + DELAY_TARGET_MS {
            return self.decrease(now_ms, smoothed_ms);
        }
        let step = if self.slow_start {
            1.0
        } else {
            1.0 / self.window
        };
        self.window = (self.window + step).min(self.ceiling);
    }

    /// Shrinks the window, unless it already did within the last round
    /// trip (one slowdown shows in many acknowledgements).
    fn decrease(&mut self, now_ms: u64, smoothed_ms: f64) {
        let recent = self
            .last_decrease_ms
            .is_some_and(|last| (now_ms.saturating_sub(last) as f64) < smoothed_ms);
        if recent {
            return;
        }
        self.slow_start = false;
        self.last_decrease_ms = Some(now_ms);
        self.window = (self.window * WINDOW_DECREASE).max(WINDOW_MIN);
    }
}

/// What came due in one poll.
pub struct Polled<T> {
    /// (destination, sequence) to send again; the item stays pending.
    pub retransmit: Vec<(String, u64)>,
    /// (destination, sequence, item) given up after the last retry.
    pub exhausted: Vec<(String, u64, T)>,
}

/// Messages awaiting acknowledgement, per destination node.
pub struct ReliableSender<T> {
    config: SenderConfig,
    first_sequence: u64,
    destinations: BTreeMap<String, Destination<T>>,
    /// (due, destination, sequence) of every pending message.
    timers: BTreeSet<(u64, String, u64)>,
    inflight: usize,
    /// Round trips to every destination, for those not measured yet.
    round_trip: RoundTrip,
    /// Doublings of new messages' timeouts since the last valid round-trip
    /// sample, and when the last was added (RFC 6298 5.5 and 5.7). Karn's
    /// rule takes no sample from a retransmitted message, so when round
    /// trips outgrow the timeout, every message is retransmitted, none
    /// gives a sample, and without this the timeout never grows: a loaded
    /// cluster would retransmit everything, and load itself further.
    backoff: u32,
    backoff_raised_ms: Option<u64>,
    admission: Admission,
}

/// Most doublings of the timeout for new messages (it stays within
/// `retransmit_timeout_max_ms` anyway).
const BACKOFF_MAX: u32 = 6;

impl<T> ReliableSender<T> {
    /// Sequence numbers to every destination start at `first_sequence`
    /// (the node's boot time, so a restarted node stays ahead of what its
    /// peers' windows saw).
    pub fn new(config: SenderConfig, first_sequence: u64) -> ReliableSender<T> {
        assert!(config.inflight_max > 0 && config.span_max > 0 && config.retries_max < 64);
        ReliableSender {
            config,
            first_sequence,
            destinations: BTreeMap::new(),
            timers: BTreeSet::new(),
            inflight: 0,
            round_trip: RoundTrip::default(),
            backoff: 0,
            backoff_raised_ms: None,
            admission: Admission::new(config.inflight_max),
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Messages this node may have awaiting acknowledgement now: the
    /// admission window, within `inflight_max`.
    pub fn window(&self) -> usize {
        (self.admission.window as usize).clamp(1, self.config.inflight_max)
    }

    /// Messages to `destination` awaiting acknowledgement.
    pub fn inflight_to(&self, destination: &str) -> usize {
        self.destinations
            .get(destination)
            .map_or(0, |pending| pending.pending.len())
    }

    /// Takes the next sequence number to `destination` for `make(sequence)`
    /// and starts its retransmission timer.
    pub fn send(
        &mut self,
        now_ms: u64,
        destination: &str,
        make: impl FnOnce(u64) -> T,
    ) -> Result<u64, Refusal> {
        if self.inflight >= self.window() {
            return Err(Refusal::InFlightFull);
        }
        let first = self.first_sequence;
        let state = self
            .destinations
            .entry(destination.to_string())
            .or_insert_with(|| Destination {
                next_sequence: first,
                pending: BTreeMap::new(),
                round_trip: RoundTrip::default(),
            });
        if let Some((&oldest, _)) = state.pending.first_key_value() {
            if state.next_sequence - oldest >= self.config.span_max {
                return Err(Refusal::WindowFull);
            }
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        let timeout_ms = state.round_trip.timeout_ms(&self.round_trip, &self.config);
        let due_ms =
            now_ms + (timeout_ms << self.backoff).min(self.config.retransmit_timeout_max_ms);
        state.pending.insert(
            sequence,
            Pending {
                item: make(sequence),
                attempts: 1,
                due_ms,
                first_sent_ms: now_ms,
            },
        );
        self.timers
            .insert((due_ms, destination.to_string(), sequence));
        self.inflight += 1;
        Ok(sequence)
    }

    /// The destination acknowledged `ranges` at `now_ms`. Returns the
    /// acknowledged items (each once, however often it is acknowledged).
    pub fn acknowledge(
        &mut self,
        now_ms: u64,
        destination: &str,
        ranges: &[AckRange],
    ) -> Vec<(u64, T)> {
        let Some(state) = self.destinations.get_mut(destination) else {
            return Vec::new();
        };
        let mut acknowledged = Vec::new();
        for range in ranges {
            let last = range.first.saturating_add(u64::from(range.count));
            let sequences: Vec<u64> = state
                .pending
                .range(range.first..last)
                .map(|(&s, _)| s)
                .collect();
            for sequence in sequences {
                let pending = state.pending.remove(&sequence).expect("just listed");
                if pending.attempts == 1 {
                    let round_trip_ms = now_ms.saturating_sub(pending.first_sent_ms) as f64;
                    state.round_trip.sample(round_trip_ms);
                    self.round_trip.sample(round_trip_ms);
                    let smoothed_ms = self.round_trip.smoothed_ms.unwrap_or(round_trip_ms);
                    self.admission
                        .acknowledged(now_ms, round_trip_ms, smoothed_ms);
                    self.backoff = 0;
                }
                self.timers
                    .remove(&(pending.due_ms, destination.to_string(), sequence));
                self.inflight -= 1;
                acknowledged.push((sequence, pending.item));
            }
        }
        acknowledged
    }

    /// Everything due at `now_ms`, at most `batch_max`: items that have
    /// retries left are rescheduled and returned for retransmission; items
    /// that do not are removed and returned as given up.
    pub fn poll_due(&mut self, now_ms: u64, batch_max: usize) -> Polled<T> {
        let mut retransmit = Vec::new();
        let mut exhausted = Vec::new();
        while retransmit.len() + exhausted.len() < batch_max {
            let Some((due, _, _)) = self.timers.first() else {
                break;
            };
            if *due > now_ms {
                break;
            }
            let (_, destination, sequence) = self.timers.pop_first().expect("just seen");
            let state = self
                .destinations
                .get_mut(&destination)
                .expect("timers follow pending");
            let timeout_ms = state.round_trip.timeout_ms(&self.round_trip, &self.config);
            let pending = state
                .pending
                .get_mut(&sequence)
                .expect("timers follow pending");
            if pending.attempts > self.config.retries_max {
                let pending = state.pending.remove(&sequence).expect("present");
                self.inflight -= 1;
                exhausted.push((destination, sequence, pending.item));
                continue;
            }
            let smoothed_ms = self.round_trip.smoothed_ms.unwrap_or(timeout_ms as f64);
            self.admission.decrease(now_ms, smoothed_ms);
            let backoff = timeout_ms << pending.attempts.min(16);
            pending.attempts += 1;
            pending.due_ms = now_ms + backoff.min(self.config.retransmit_timeout_max_ms);
            self.timers
                .insert((pending.due_ms, destination.clone(), sequence));
            retransmit.push((destination, sequence));
            self.raise_backoff(now_ms, timeout_ms);
        }
        Polled {
            retransmit,
            exhausted,
        }
    }

    /// A message timed out: new messages wait twice as long, until a valid
    /// round-trip sample comes. Raised once per timeout period: one
    /// slowdown times out many messages at once.
    fn raise_backoff(&mut self, now_ms: u64, timeout_ms: u64) {
        let period_ms = timeout_ms << self.backoff;
        let recent = self
            .backoff_raised_ms
            .is_some_and(|last| now_ms.saturating_sub(last) < period_ms);
        if recent || self.backoff >= BACKOFF_MAX {
            return;
        }
        self.backoff += 1;
        self.backoff_raised_ms = Some(now_ms);
    }

    /// When the next pending message comes due, if any is pending.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.timers.first().map(|(due_ms, _, _)| *due_ms)
    }

    /// The pending item `sequence` to `destination`, for retransmission.
    pub fn get(&self, destination: &str, sequence: u64) -> Option<&T> {
        self.destinations
            .get(destination)?
            .pending
            .get(&sequence)
            .map(|pending| &pending.item)
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last_micros: u64,
}

impl TokenBucket {
    /// A full bucket at `now_micros`.
    pub fn new(rate_per_s: f64, burst: u32, now_micros: u64) -> TokenBucket {
        TokenBucket {
            rate_per_s,
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last_micros: now_micros,
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now_micros: u64) -> bool {
        let elapsed = now_micros.saturating_sub(self.last_micros) as f64 / 1e6;
        self.last_micros = self.last_micros.max(now_micros);
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
