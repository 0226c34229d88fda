//! Failed authentication, slowed per client, and refused requests audited
//! in aggregate, so that guessing tokens is slow and cannot flood the log.
//! (A window per client address in a bounded map: small enough to keep
//! here rather than take a rate-limiting framework for it.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long a client's window lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Failed authentications a client may have in a window; after that its
/// requests are 429 until the window ends.
pub const FAILURES_ALLOWED: u32 = 10;
/// Refused requests of a client written one line each in a window; the
/// rest are counted, and said in one line when the window ends.
pub const AUDITED_EACH: u32 = 5;
/// The most clients followed at once; beyond it, new ones share one window.
const MOST_CLIENTS: usize = 10_000;

/// Who a window belongs to: the address, or an IPv6 client's /64 (one
/// machine commonly has the whole of it).
pub(super) fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

struct Window {
    started: Instant,
    started_at: SystemTime,
    failures: u32,
    audited: u32,
    unaudited: u64,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            started_at: SystemTime::now(),
            failures: 0,
            audited: 0,
            unaudited: 0,
        }
    }
}

/// Refused requests of one client that were not written one by one.
pub struct Unaudited {
    pub client: IpAddr,
    pub since: SystemTime,
    pub requests: u64,
}

#[derive(Default)]
pub struct AuthThrottle {
    clients: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthThrottle {
    /// When a client that failed too often in its window may try again.
    pub fn blocked(&self, client: IpAddr) -> Option<Duration> {
        self.blocked_at(client, Instant::now())
    }

    fn blocked_at(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let window = clients.get(&key(client))?;
        let end = window.started + WINDOW;
        (window.failures >= FAILURES_ALLOWED && now < end).then(|| end - now)
    }

    /// A failed authentication.
    pub fn failed(&self, client: IpAddr) {
        self.failed_at(client, Instant::now());
    }

    fn failed_at(&self, client: IpAddr, now: Instant) {
        self.with_window(client, now, |w| w.failures += 1);
    }

    /// A refused request: whether to write its audit line (the first few of
    /// the window) or only count it.
    pub fn audit_refusal(&self, client: IpAddr) -> bool {
        self.audit_refusal_at(client, Instant::now())
    }

    fn audit_refusal_at(&self, client: IpAddr, now: Instant) -> bool {
        self.with_window(client, now, |w| {
            if w.audited < AUDITED_EACH {
                w.audited += 1;
                true
            } else {
                w.unaudited += 1;
                false
            }
        })
    }

    fn with_window<T>(&self, client: IpAddr, now: Instant, f: impl FnOnce(&mut Window) -> T) -> T {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut client = key(client);
        if !clients.contains_key(&client) && clients.len() >= MOST_CLIENTS {
            clients.retain(|_, w| now < w.started + WINDOW || w.unaudited > 0);
            if clients.len() >= MOST_CLIENTS {
                // Too many to follow one by one: the newcomers share.
                client = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
            }
        }
        let window = clients.entry(client).or_insert_with(|| Window::new(now));
        if now >= window.started + WINDOW && window.unaudited == 0 {
            *window = Window::new(now);
        }
        f(window)
    }

    /// The windows that ended (all of them with `all`) with refused requests
    /// not written one by one; ended windows are forgotten.
    pub fn ended(&self, all: bool) -> Vec<Unaudited> {
        self.ended_at(Instant::now(), all)
    }

    fn ended_at(&self, now: Instant, all: bool) -> Vec<Unaudited> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        clients.retain(|client, w| {
            let over = all || now >= w.started + WINDOW;
            if over && w.unaudited > 0 {
                out.push(Unaudited {
                    client: *client,
                    since: w.started_at,
                    requests: w.unaudited,
                });
            }
            !over
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_fails_too_often_waits_and_others_do_not() {
        let throttle = AuthThrottle::default();
        let guesser: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let start = Instant::now();
        for _ in 0..FAILURES_ALLOWED {
            assert!(throttle.blocked_at(guesser, start).is_none());
            throttle.failed_at(guesser, start);
        }
        let wait = throttle.blocked_at(guesser, start).unwrap();
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(1));
        assert!(throttle.blocked_at(other, start).is_none());
        assert!(throttle.blocked_at(guesser, start + WINDOW).is_none());
    }

    #[test]
    fn refusals_beyond_the_first_few_are_counted_and_said_once() {
        let throttle = AuthThrottle::default();
        let client: IpAddr = "2001:db8::1".parse().unwrap();
        let neighbour: IpAddr = "2001:db8::2".parse().unwrap();
        let start = Instant::now();
        let audited = (0..100)
            .filter(|i| {
                let who = if i % 2 == 0 { client } else { neighbour };
                throttle.audit_refusal_at(who, start)
            })
            .count();
        // One /64, one window.
        assert_eq!(audited, AUDITED_EACH as usize);
        assert!(throttle.ended_at(start, false).is_empty());
        let ended = throttle.ended_at(start + WINDOW, false);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].requests, 100 - u64::from(AUDITED_EACH));
        assert_eq!(ended[0].client, "2001:db8::".parse::<IpAddr>().unwrap());
        assert!(throttle.ended_at(start + WINDOW, true).is_empty());
    }
}
