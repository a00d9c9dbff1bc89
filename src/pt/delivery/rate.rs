//! The bridge's per-address download limit: at most N delivery connections per client IP
//! address in any [`WINDOW`].
//!
//! Each address keeps the times of its connections within the window (at most N of them), so
//! memory is bounded by N times the number of addresses seen in the last window; past
//! [`MAX_ADDRESSES`] addresses, those whose window has passed are forgotten first, and if that
//! frees nothing the newcomer is refused (a flood of distinct addresses cannot grow the table).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The period the limit counts over.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 65_536;

/// Counts delivery connections per client address.
#[derive(Debug)]
pub struct RateLimit {
    per_window: usize,
    seen: HashMap<IpAddr, VecDeque<Instant>>,
}

impl RateLimit {
    /// At most `per_window` connections per address per [`WINDOW`] (at least 1).
    pub fn new(per_window: u32) -> Self {
        Self {
            per_window: usize::try_from(per_window.max(1)).unwrap_or(usize::MAX),
            seen: HashMap::new(),
        }
    }

    /// Counts a connection from `ip` at `now`: `Ok` if allowed, else how long until the next
    /// one will be.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if !self.seen.contains_key(&ip) && self.seen.len() >= MAX_ADDRESSES {
            self.seen.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
            if self.seen.len() >= MAX_ADDRESSES {
                return Err(WINDOW);
            }
        }
        let times = self.seen.entry(ip).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= self.per_window {
            let oldest = *times.front().expect("per_window >= 1");
            return Err(WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_per_window_per_address() {
        let mut limit = RateLimit::new(2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(limit.admit(a, t0), Ok(()));
        assert_eq!(limit.admit(a, t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(
            limit.admit(a, t0 + Duration::from_secs(20)),
            Err(WINDOW - Duration::from_secs(20)),
            "third within the hour"
        );
        assert_eq!(
            limit.admit(b, t0 + Duration::from_secs(20)),
            Ok(()),
            "other address"
        );
        // The first one leaves the window; one more is allowed, then none again.
        assert_eq!(limit.admit(a, t0 + WINDOW), Ok(()));
        assert_eq!(
            limit.admit(a, t0 + WINDOW + Duration::from_secs(1)),
            Err(Duration::from_secs(9))
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let mut limit = RateLimit::new(1);
        let t0 = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 {
            assert!(limit.admit(IpAddr::from(i.to_be_bytes()), t0).is_ok());
        }
        let newcomer = IpAddr::from([255, 255, 255, 255]);
        assert_eq!(limit.admit(newcomer, t0), Err(WINDOW), "table full");
        // Once the window has passed, old entries make room.
        assert_eq!(limit.admit(newcomer, t0 + WINDOW), Ok(()));
        assert!(limit.seen.len() <= MAX_ADDRESSES);
    }
}
