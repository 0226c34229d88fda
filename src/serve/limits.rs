//! Abuse limits: how often `run` may be asked for, and from where.
//! (A token bucket and a list of networks: small enough to keep here
//! rather than take a rate-limiting framework for one route.)

use crate::error::Error;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `per_minute` runs a minute, in a bucket that holds as many: a
/// burst may use the minute's allowance at once, then one comes back every
/// `60 / per_minute` seconds.
pub struct RateLimit {
    per_minute: u32,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn per_minute(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            bucket: Mutex::new((f64::from(per_minute), Instant::now())),
        }
    }

    /// Takes one run from the bucket, or says how long until one is there.
    pub fn take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    /// Returns a run taken by [`take`](Self::take) that did not happen.
    pub fn give_back(&self) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket.0 = (bucket.0 + 1.0).min(f64::from(self.per_minute));
    }

    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *bucket;
        let tokens =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * per_second).min(capacity);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            Ok(())
        } else {
            *bucket = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / per_second))
        }
    }
}

/// How many times a token's budget the server as a whole allows: a safety
/// limit above the tokens' own.
pub const GLOBAL_RUNS_PER_TOKEN_BUDGET: u32 = 4;

/// The run budget: `per_minute` runs a minute for each token, and
/// [`GLOBAL_RUNS_PER_TOKEN_BUDGET`] times that for all of them together, so
/// that one token's retry loop cannot lock another out.
pub struct RunBudget {
    per_minute: u32,
    tokens: Mutex<std::collections::HashMap<String, RateLimit>>,
    global: RateLimit,
}

impl RunBudget {
    pub fn per_minute(per_minute: u32) -> RunBudget {
        RunBudget {
            per_minute,
            tokens: Mutex::new(std::collections::HashMap::new()),
            global: RateLimit::per_minute(per_minute.saturating_mul(GLOBAL_RUNS_PER_TOKEN_BUDGET)),
        }
    }

    /// Takes a run from `token`'s budget and the global one, or says how
    /// long until both have one.
    pub fn take(&self, token: &str) -> Result<(), Duration> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let own = tokens
            .entry(token.to_owned())
            .or_insert_with(|| RateLimit::per_minute(self.per_minute));
        own.take()?;
        if let Err(wait) = self.global.take() {
            own.give_back();
            return Err(wait);
        }
        Ok(())
    }

    /// Gives back a run that did not happen or had nothing to do.
    pub fn give_back(&self, token: &str) {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(own) = tokens.get(token) {
            own.give_back();
        }
        self.global.give_back();
    }
}

/// The networks clients may come from; empty lets every client in.
pub struct AllowList {
    networks: Vec<IpNet>,
}

impl AllowList {
    /// From `10.0.0.0/8`, `192.168.1.7` (one address) or `fd00::/8`
    /// entries; `origin` names where they came from, for the error.
    pub fn parse(entries: &[String], origin: &str) -> Result<AllowList, Error> {
        let mut networks = Vec::new();
        for entry in entries.iter().flat_map(|e| e.split(',')) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let network = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| Error::Config {
                    origin: origin.to_owned(),
                    message: format!("`{entry}` is not a network (10.0.0.0/8) or an address"),
                })?;
            networks.push(ipv4_mapped(network));
        }
        // Given but empty (`--allow-from ,`, an empty template value) is a
        // mistake, not "everyone".
        if networks.is_empty() && !entries.is_empty() {
            return Err(Error::Config {
                origin: origin.to_owned(),
                message: "no network given; leave it out to allow every client".into(),
            });
        }
        Ok(AllowList { networks })
    }

    pub fn allows(&self, address: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        // As in pg_hba.conf, an IPv6 network holds IPv6 clients only:
        // `::/0` is every IPv6 client, not everyone.
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&address))
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

/// `::ffff:10.0.0.0/104` as `10.0.0.0/8`: clients are compared as IPv4.
fn ipv4_mapped(network: IpNet) -> IpNet {
    match network {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(network),
            None => network,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_minutes_runs_then_one_every_interval() {
        let limit = RateLimit::per_minute(2);
        let start = Instant::now();
        assert!(limit.take_at(start).is_ok());
        assert!(limit.take_at(start).is_ok());
        let wait = limit.take_at(start).unwrap_err();
        assert!(
            (29.9..=30.0).contains(&wait.as_secs_f64()),
            "{wait:?}: one every 30 s"
        );
        assert!(limit.take_at(start + Duration::from_secs(29)).is_err());
        assert!(limit.take_at(start + Duration::from_secs(31)).is_ok());
        assert!(limit.take_at(start + Duration::from_secs(31)).is_err());
        // A run given back is there again, and the bucket holds no more
        // than a minute's worth.
        limit.give_back();
        assert!(limit.take_at(start + Duration::from_secs(31)).is_ok());
        let full = RateLimit::per_minute(1);
        full.give_back();
        assert!(full.take_at(start).is_ok());
        assert!(full.take_at(start).is_err());
    }

    #[test]
    fn each_token_has_its_own_budget_under_a_global_one() {
        let budget = RunBudget::per_minute(1);
        assert!(budget.take("ci").is_ok());
        assert!(budget.take("ci").is_err());
        // Another token is not locked out by the first one's loop.
        assert!(budget.take("admin").is_ok());
        budget.give_back("ci");
        assert!(budget.take("ci").is_ok());
        // The global limit is four tokens' worth.
        assert!(budget.take("a").is_ok());
        assert!(budget.take("b").is_ok());
        let refused = budget.take("c");
        assert!(refused.is_err(), "five runs in all, four allowed");
        // The refused token's own run was given back.
        budget.give_back("ci");
        assert!(budget.take("c").is_ok());
    }

    #[test]
    fn networks_and_addresses() {
        let list = AllowList::parse(
            &["10.0.0.0/8, 192.168.1.7".into(), "fd00::/8".into()],
            "--allow-from",
        )
        .unwrap();
        for allowed in ["10.1.2.3", "192.168.1.7", "fd00::1", "::ffff:10.9.9.9"] {
            assert!(list.allows(allowed.parse().unwrap()), "{allowed}");
        }
        for refused in ["11.0.0.1", "192.168.1.8", "127.0.0.1", "::1"] {
            assert!(!list.allows(refused.parse().unwrap()), "{refused}");
        }
        assert!(
            AllowList::parse(&[], "x")
                .unwrap()
                .allows("1.2.3.4".parse().unwrap())
        );
        let every_v6 = AllowList::parse(&["::/0".into()], "x").unwrap();
        assert!(!every_v6.allows("10.1.2.3".parse().unwrap()));
        assert!(!every_v6.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(every_v6.allows("::1".parse().unwrap()));
        let v6_only = AllowList::parse(&["fd00::/8".into()], "x").unwrap();
        assert!(!v6_only.allows("10.1.2.3".parse().unwrap()));
        let mapped = AllowList::parse(&["::ffff:127.0.0.1/128".into()], "x").unwrap();
        assert!(mapped.allows("127.0.0.1".parse().unwrap()));
        assert!(mapped.allows("::ffff:127.0.0.1".parse().unwrap()));
        let err = AllowList::parse(&[" , ".into()], "--allow-from")
            .err()
            .unwrap();
        assert!(err.to_string().contains("no network given"));
        let err = AllowList::parse(&["10.0.0.0/33".into()], "MIGRATE_ALLOW_FROM")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("MIGRATE_ALLOW_FROM: `10.0.0.0/33` is not a network")
        );
    }
}
