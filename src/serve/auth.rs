//! Bearer tokens: each known by a name (for the audit log and the journal)
//! and kept only as its SHA-256 hash. A presented token is hashed and
//! compared with every known hash in constant time.

use crate::error::Error;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// The shortest token accepted from `MIGRATE_ADMIN_TOKEN`: guessing must
/// not be an option.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The name `MIGRATE_ADMIN_TOKEN` goes by in the audit log.
pub const ENV_TOKEN_NAME: &str = "MIGRATE_ADMIN_TOKEN";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Status, history and metrics.
    Read,
    /// Also run (and approve) migrations.
    Run,
}

pub struct Tokens {
    known: Vec<(String, [u8; 32], Role)>,
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization` header, or not `Bearer <token>`: 401.
    Missing,
    /// A token nobody knows: 403.
    Unknown,
}

impl Tokens {
    /// The tokens of `MIGRATE_ADMIN_TOKEN` (a token itself, role `run`) and of a
    /// token file (`name:sha256-hex[:read|run]` per line, `run` if not said; `#` comments and blank lines
    /// allowed). None at all is an error: the server does not start.
    pub fn load(env_token: Option<&str>, file: Option<&Path>) -> Result<Tokens, Error> {
        let mut known = Vec::new();
        if let Some(token) = env_token {
            if token.chars().count() < MIN_TOKEN_LENGTH || token.trim() != token {
                return Err(Error::Config {
                    origin: ENV_TOKEN_NAME.into(),
                    message: format!(
                        "the token must be at least {MIN_TOKEN_LENGTH} characters, without \
                         surrounding spaces (e.g. `openssl rand -hex 32`)"
                    ),
                });
            }
            known.push((ENV_TOKEN_NAME.to_owned(), hash(token), Role::Run));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|err| Error::Config {
                origin: path.display().to_string(),
                message: format!("cannot read the token file: {err}"),
            })?;
            for (index, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let origin = format!("{}:{}", path.display(), index + 1);
                let bad = |message: &str| Error::Config {
                    origin: origin.clone(),
                    message: message.to_owned(),
                };
                let (name, rest) = line
                    .split_once(':')
                    .ok_or_else(|| bad("expected `name:sha256-hex` or `name:sha256-hex:role`"))?;
                let (hex, role) = match rest.split_once(':') {
                    None => (rest, Role::Run),
                    Some((hex, role)) => match role.trim() {
                        "run" => (hex, Role::Run),
                        "read" => (hex, Role::Read),
                        other => {
                            return Err(bad(&format!(
                                "`{other}` is not a role: `read` (status, history, metrics) or \
                                 `run` (also runs)"
                            )));
                        }
                    },
                };
                let name = name.trim();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
                {
                    return Err(bad(
                        "a token's name is letters, digits and `-_.@` (it is written to the audit log)",
                    ));
                }
                let digest = parse_hex(hex.trim()).ok_or_else(|| {
                    bad("expected the token's SHA-256 as 64 hex digits (`printf %s \"$TOKEN\" | sha256sum`)")
                })?;
                if known.iter().any(|(n, _, _)| n == name) {
                    return Err(bad(&format!("the name `{name}` is given twice")));
                }
                known.push((name.to_owned(), digest, role));
            }
        }
        if known.is_empty() {
            return Err(Error::Config {
                origin: "migrate serve".into(),
                message: format!(
                    "no token: set {ENV_TOKEN_NAME}, or give --token-file with at least one \
                     `name:sha256-hex` line; the API does not run without authentication"
                ),
            });
        }
        Ok(Tokens { known })
    }

    /// The name and role of the token an `Authorization` header carries.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(&str, Role), Refused> {
        let header = authorization.ok_or(Refused::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| Refused::Missing)?;
        let (scheme, token) = header.split_once(' ').ok_or(Refused::Missing)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Refused::Missing);
        }
        let presented = hash(token);
        // Every known hash is compared, whatever matched before.
        let mut found = None;
        for (name, digest, role) in &self.known {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some((name.as_str(), *role));
            }
        }
        found.ok_or(Refused::Unknown)
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    // from_str_radix would take a sign ("+f").
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "a-long-enough-test-token";

    fn hex(token: &str) -> String {
        hash(token).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn bearer_tokens_from_the_environment_and_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(
            &file,
            format!(
                "# ci and ops\nci:{}\n\nops : {}\nviewer:{}:read\nrunner:{}:run\n",
                hex("ci-token-0123456789"),
                hex("ops-token-0123456789").to_uppercase(),
                hex("viewer-token-0123456789"),
                hex("runner-token-0123456789")
            ),
        )
        .unwrap();
        let tokens = Tokens::load(Some(TOKEN), Some(&file)).unwrap();
        assert_eq!(
            tokens.check(Some(format!("Bearer {TOKEN}").as_bytes())),
            Ok((ENV_TOKEN_NAME, Role::Run))
        );
        assert_eq!(
            tokens.check(Some(b"bearer ci-token-0123456789")),
            Ok(("ci", Role::Run))
        );
        assert_eq!(
            tokens.check(Some(b"Bearer ops-token-0123456789")),
            Ok(("ops", Role::Run))
        );
        assert_eq!(
            tokens.check(Some(b"Bearer viewer-token-0123456789")),
            Ok(("viewer", Role::Read))
        );
        assert_eq!(
            tokens.check(Some(b"Bearer runner-token-0123456789")),
            Ok(("runner", Role::Run))
        );
        assert_eq!(
            tokens.check(Some(b"Bearer nope-nope-nope-nope")),
            Err(Refused::Unknown)
        );
        for malformed in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"token",
            b"\xff\xfe",
        ] {
            assert_eq!(tokens.check(Some(malformed)), Err(Refused::Missing));
        }
        assert_eq!(tokens.check(None), Err(Refused::Missing));
    }

    #[test]
    fn bad_token_settings_are_refused_with_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let message = |env: Option<&str>, text: Option<&str>| {
            if let Some(text) = text {
                std::fs::write(&file, text).unwrap();
            }
            Tokens::load(env, text.map(|_| file.as_path()))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(message(None, None).contains("no token"));
        assert!(message(Some("short"), None).contains("at least 16 characters"));
        assert!(message(None, Some("# nothing\n")).contains("no token"));
        assert!(message(None, Some("ci abc\n")).contains("tokens:1: expected `name:sha256-hex`"));
        let role = format!("ci:{}:admin\n", hex("x"));
        assert!(message(None, Some(&role)).contains("tokens:1: `admin` is not a role"));
        assert!(message(None, Some("ci:abc\n")).contains("64 hex digits"));
        let signed = format!("ci:+f{}\n", &hex("x")[2..]);
        assert!(message(None, Some(&signed)).contains("64 hex digits"));
        let twice = format!("ci:{0}\nci:{0}\n", hex("x"));
        assert!(message(None, Some(&twice)).contains("tokens:2: the name `ci` is given twice"));
        assert!(message(None, Some(&format!("c i:{}\n", hex("x")))).contains("a token's name"));
    }
}
