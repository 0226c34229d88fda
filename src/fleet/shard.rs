//! Splitting a fleet across processes (`--shard I/N`, or a Kubernetes
//! Indexed Job's `JOB_COMPLETION_INDEX` with `--shards N`): each target
//! falls in exactly one shard, by a stable hash of its name.

use sha2::{Digest, Sha256};

/// Shard `index` of `count` (0 ≤ index < count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `I/N`, with 0 ≤ I < N.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not I/N (say 0/4 for the first of four)"))?;
        let number = |part: &str, what: &str| {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{text}`: {what} `{part}` is not a whole number"))
        };
        Shard::new(number(index, "the index")?, number(count, "the count")?)
    }

    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 {
            return Err("the number of shards must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: shards are numbered from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether the target of this name is this shard's. The hash is the
    /// first 8 bytes of SHA-256 over the name, so it is the same in every
    /// process, release and platform.
    pub fn holds(&self, name: &str) -> bool {
        shard_of(name, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard a name falls in, of `count`.
pub fn shard_of(name: &str, count: u32) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard::parse(" 0 / 1 "), Ok(Shard { index: 0, count: 1 }));
        assert!(Shard::parse("4/4").unwrap_err().contains("0 to 3"));
        assert!(Shard::parse("0/0").unwrap_err().contains("at least 1"));
        assert!(Shard::parse("1").unwrap_err().contains("I/N"));
        assert!(Shard::parse("a/2").unwrap_err().contains("`a`"));
        assert!(Shard::parse("-1/2").is_err());
    }

    #[test]
    fn every_name_falls_in_exactly_one_shard_and_the_split_is_even() {
        let count = 4;
        let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
        let mut sizes = [0usize; 4];
        for n in 0..4000 {
            let name = format!("tenant_{n:04}");
            let holders: Vec<&Shard> = shards.iter().filter(|s| s.holds(&name)).collect();
            assert_eq!(holders.len(), 1, "{name}");
            sizes[holders[0].index as usize] += 1;
        }
        for size in sizes {
            assert!((850..1150).contains(&size), "{sizes:?}");
        }
    }

    #[test]
    fn the_hash_is_fixed() {
        // A change here moves targets between the pods of a running Job.
        assert_eq!(shard_of("tenant_0001", 1000), shard_of("tenant_0001", 1000));
        let digest = Sha256::digest(b"tenant_0001");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 7;
        assert_eq!(u64::from(shard_of("tenant_0001", 7)), expected);
        assert_eq!(shard_of("anything", 1), 0);
    }
}
