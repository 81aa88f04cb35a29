//! A steady rate for load generators that run on an agent's tick: how
//! many sends are due at each tick, with at most a second's burst.

/// Sends owed at `rate` per second since the last tick.
#[derive(Debug)]
pub struct Pace {
    rate: f64,
    credit: f64,
    last_tick_micros: Option<u64>,
}

impl Pace {
    /// A pace of `rate` per second, owing nothing yet.
    pub fn new(rate: f64) -> Pace {
        Pace {
            rate,
            credit: 0.0,
            last_tick_micros: None,
        }
    }

    /// How many sends are due at `now_micros`; none (and nothing owed
    /// later) while `sending` is false.
    pub fn due(&mut self, now_micros: u64, sending: bool) -> u64 {
        let last = self
            .last_tick_micros
            .replace(now_micros)
            .unwrap_or(now_micros);
        if !sending {
            self.credit = 0.0;
            return 0;
        }
        let elapsed = now_micros.saturating_sub(last) as f64 / 1e6;
        self.credit = (self.credit + self.rate * elapsed).min(self.rate.max(1.0));
        let due = self.credit.floor();
        self.credit -= due;
        due as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_owes_its_rate_and_forgets_while_stopped() {
        let mut pace = Pace::new(1_000.0);
        assert_eq!(pace.due(0, true), 0);
        assert_eq!(pace.due(10_500, true), 10);
        assert_eq!(pace.due(11_000, true), 1, "the half owed is kept");
        assert_eq!(pace.due(5_000_000, true), 1_000, "at most a second's burst");
        assert_eq!(pace.due(6_000_000, false), 0);
        assert_eq!(pace.due(6_001_000, true), 1);
    }
}
