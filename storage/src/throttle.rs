//! Failed-login throttling, per address and per client IP, shared by every
//! front end (HTTP, IMAP, POP3, SMTP AUTH). After too many failures in a window,
//! further attempts for that address or from that IP are refused (HTTP 429,
//! IMAP `NO [UNAVAILABLE]`, …) — right password or not, existing address or
//! not — until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per address in a window.
pub const PER_ADDRESS: u32 = 5;
/// Failures allowed per client IP in a window.
pub const PER_IP: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Keys remembered at most (oldest forgotten first), so a flood of
/// addresses cannot grow memory without bound.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(String),
    Ip(IpAddr),
}

/// Counts failures; says when to refuse.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<Key, (u32, Instant)>>,
}

impl LoginLimiter {
    fn keys(address: &str, ip: Option<IpAddr>) -> Vec<(Key, u32)> {
        let mut keys = vec![(Key::Address(address.to_ascii_lowercase()), PER_ADDRESS)];
        if let Some(ip) = ip {
            keys.push((Key::Ip(ip), PER_IP));
        }
        keys
    }

    /// How long to wait before trying again, if attempts are refused now.
    pub fn blocked(&self, address: &str, ip: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(address, ip)
            .into_iter()
            .filter_map(|(k, max)| {
                let (n, since) = failures.get(&k)?;
                let left = WINDOW.checked_sub(now.duration_since(*since))?;
                (*n >= max).then_some(left)
            })
            .max()
    }

    /// Records a failed attempt.
    pub fn failed(&self, address: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
            if failures.len() >= MAX_KEYS
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, v)| v.1)
                    .map(|(k, _)| k.clone())
            {
                failures.remove(&oldest);
            }
        }
        for (k, _) in Self::keys(address, ip) {
            let entry = failures.entry(k).or_insert((0, now));
            if now.duration_since(entry.1) >= WINDOW {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ips_are_throttled_separately() {
        let l = LoginLimiter::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..PER_ADDRESS {
            assert!(l.blocked("ana@example.com", Some(ip)).is_none());
            l.failed("ana@example.com", Some(ip));
        }
        assert!(
            l.blocked("ANA@example.com", None).is_some(),
            "per address, any case"
        );
        assert!(
            l.blocked("bo@example.com", Some(ip)).is_none(),
            "the IP is still under its limit"
        );
        for i in 0..PER_IP {
            l.failed(&format!("x{i}@example.com"), Some(ip));
        }
        assert!(l.blocked("bo@example.com", Some(ip)).is_some(), "per IP");
        assert!(
            l.blocked("bo@example.com", Some([10, 0, 0, 2].into()))
                .is_none()
        );
    }
}
