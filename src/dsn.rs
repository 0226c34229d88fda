//! A database connection string (URL or key=value form) with libpq's TLS
//! modes, and a `Debug` that never shows the password.
//!
//! tokio-postgres parses both forms but knows only `disable`, `prefer` and
//! `require`, and rejects `sslrootcert`. The TLS keys are therefore taken
//! out here (a small hand-written tokenizer: no maintained crate splits a
//! libpq string without also interpreting it) and the rest is handed to
//! tokio-postgres unchanged.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use tokio_postgres::config::{Host, SslMode};

/// How much the TLS layer checks, with libpq's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate
    /// (`allow` and `prefer`; libpq's default).
    Prefer,
    /// TLS or nothing, certificate not checked (checked against the root
    /// certificate when one is given, as libpq does).
    Require,
    /// TLS, certificate chain checked, host name not.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

/// Where the trusted root certificates for `verify-ca` / `verify-full` come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCerts {
    /// `sslrootcert=PATH`: a PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's store.
    System,
}

#[derive(Clone)]
pub struct Dsn {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: TlsMode,
    pub(crate) root_certs: Option<RootCerts>,
}

impl Dsn {
    /// Parses a connection string. The error never quotes the string itself,
    /// since it may hold a password.
    pub fn parse(text: &str) -> Result<Dsn, String> {
        let text = text.trim();
        let (rest, tls_params) = if strip_url_scheme(text).is_some() {
            let text = encode_user_info_ats(text);
            let after = strip_url_scheme(&text).unwrap_or_default();
            split_url_params(&text, after)?
        } else {
            split_key_value_params(text)?
        };
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|err: tokio_postgres::Error| format!("{err}"))?;
        let mut tls = TlsMode::Prefer;
        let mut root_certs = None;
        for (key, value) in tls_params {
            match key.as_str() {
                "sslmode" => {
                    tls = match value.as_str() {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" => TlsMode::VerifyCa,
                        "verify-full" => TlsMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode `{other}` is not one of disable, allow, prefer, \
                                 require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" if value == "system" => root_certs = Some(RootCerts::System),
                "sslrootcert" => root_certs = Some(RootCerts::File(PathBuf::from(value))),
                _ => unreachable!("only TLS keys are split out"),
            }
        }
        // As libpq does, sslmode does not apply to Unix-domain sockets,
        // which PostgreSQL never encrypts.
        let all_unix = !config.get_hosts().is_empty()
            && config.get_hostaddrs().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, Host::Unix(_)));
        if all_unix {
            tls = TlsMode::Disable;
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err("no host given (add host=... or postgres://HOST/...)".into());
        }
        if config.get_application_name().is_none() {
            config.application_name("migrate");
        }
        Ok(Dsn {
            config,
            tls,
            root_certs,
        })
    }

    /// The same connection under another `application_name`.
    pub fn with_application_name(&self, name: &str) -> Dsn {
        let mut dsn = self.clone();
        dsn.config.application_name(name);
        dsn
    }

    pub fn tls_mode(&self) -> TlsMode {
        self.tls
    }

    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// Where the connection goes, for messages: `user@host:port/dbname`,
    /// never the password.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(name)) => name.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => self
                .config
                .get_hostaddrs()
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("?");
        let db = self.config.get_dbname().unwrap_or(user);
        format!("{user}@{host}:{port}/{db}")
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres' Config Debug already redacts the password.
        f.debug_struct("Dsn")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .field("root_certs", &self.root_certs)
            .finish()
    }
}

const TLS_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

fn strip_url_scheme(text: &str) -> Option<&str> {
    text.strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
}

type Params = Vec<(String, String)>;

/// Percent-encodes every `@` of a URL's user info but the last, so that a
/// password holding a bare `@` (`postgres://u:Zx9@Secret7@host/db`) reaches
/// tokio-postgres, which ends the user info at the first `@`, whole.
///
/// The user info ends at the last `@` before the host part (which ends at
/// the first `/` or `?`), as WHATWG URLs, Go's net/url and Python split it.
/// libpq takes the first `@` instead and then fails to resolve host
/// `Secret7@host`, printing the tail of the password in its error.
fn encode_user_info_ats(text: &str) -> Cow<'_, str> {
    let Some(after) = strip_url_scheme(text) else {
        return Cow::Borrowed(text);
    };
    let scheme = &text[..text.len() - after.len()];
    let authority = &after[..after.find(['/', '?']).unwrap_or(after.len())];
    match authority.rfind('@') {
        Some(end) if authority[..end].contains('@') => Cow::Owned(format!(
            "{scheme}{}{}",
            authority[..end].replace('@', "%40"),
            &after[end..]
        )),
        _ => Cow::Borrowed(text),
    }
}

/// Splits the TLS keys out of a URL's query string.
fn split_url_params(text: &str, after_scheme: &str) -> Result<(String, Params), String> {
    let Some((_, query)) = after_scheme.split_once('?') else {
        return Ok((text.to_owned(), Vec::new()));
    };
    let base = &text[..text.len() - query.len() - 1];
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if TLS_KEYS.contains(&key) {
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| format!("the value of `{key}` is not valid UTF-8"))?;
            tls.push((key.to_owned(), value.into_owned()));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

/// Splits the TLS keys out of a `key=value key='quoted value'` string and
/// rebuilds the rest with every value quoted.
fn split_key_value_params(text: &str) -> Result<(String, Params), String> {
    let mut kept = String::new();
    let mut tls = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "expected `=` after `{key}` (write key=value pairs or a postgres:// URL)"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated quoted value for `{key}`")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value for `{key}`")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&key);
            kept.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    kept.push('\\');
                }
                kept.push(c);
            }
            kept.push('\'');
        }
    }
    Ok((kept, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_tls_keys() {
        let dsn = Dsn::parse(
            "postgres://app:s3cret@db.example.com:6432/shop?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(dsn.tls, TlsMode::VerifyFull);
        assert_eq!(dsn.root_certs, Some(RootCerts::File("/etc/ca.pem".into())));
        assert_eq!(dsn.describe(), "app@db.example.com:6432/shop");
        assert_eq!(
            dsn.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(5))
        );
        assert_eq!(dsn.config.get_application_name(), Some("migrate"));
    }

    #[test]
    fn key_value_with_quotes_and_tls_keys() {
        let dsn = Dsn::parse(
            r"host=db.internal  user=me password='it\'s a secret' dbname=x sslmode=require application_name='deploy bot'",
        )
        .unwrap();
        assert_eq!(dsn.tls, TlsMode::Require);
        assert_eq!(dsn.config.get_password().unwrap(), b"it's a secret");
        assert_eq!(dsn.config.get_application_name(), Some("deploy bot"));
        assert_eq!(dsn.describe(), "me@db.internal:5432/x");
        let socket = Dsn::parse(r"host='/tmp/socket dir' user=me").unwrap();
        assert_eq!(socket.describe(), "me@/tmp/socket dir:5432/me");
    }

    #[test]
    fn sslmode_does_not_apply_to_unix_sockets() {
        let dsn = Dsn::parse("host=/var/run/postgresql sslmode=verify-full").unwrap();
        assert_eq!(dsn.tls, TlsMode::Disable);
        let dsn = Dsn::parse("host=db.internal sslmode=verify-full").unwrap();
        assert_eq!(dsn.tls, TlsMode::VerifyFull);
    }

    #[test]
    fn sslrootcert_system() {
        let dsn = Dsn::parse("host=h sslmode=verify-ca sslrootcert=system").unwrap();
        assert_eq!(dsn.tls, TlsMode::VerifyCa);
        assert_eq!(dsn.root_certs, Some(RootCerts::System));
    }

    #[test]
    fn errors_never_quote_the_password() {
        for bad in [
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "host=h password=hunter2 sslmode=bogus",
            "host=h password=hunter2 port=notaport",
            "host=h password='hunter2",
            "host=h password=hunter2 nonsense",
            "password=hunter2",
        ] {
            let err = Dsn::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_last_at_before_the_host_ends_the_user_info() {
        let dsn = Dsn::parse("postgres://u:Zx9@Secret7@host/db").unwrap();
        assert_eq!(dsn.user(), Some("u"));
        assert_eq!(dsn.config.get_password(), Some(&b"Zx9@Secret7"[..]));
        assert_eq!(dsn.describe(), "u@host:5432/db");

        let dsn = Dsn::parse("postgresql://u:a@b:c@d@host:6000/db?sslmode=require").unwrap();
        assert_eq!(dsn.config.get_password(), Some(&b"a@b:c@d"[..]));
        assert_eq!(dsn.describe(), "u@host:6000/db");
        assert_eq!(dsn.tls, TlsMode::Require);

        // A user name holding `@` (as some hosted services want), with and
        // without a password.
        let dsn = Dsn::parse("postgres://me@server:pw@host/db").unwrap();
        assert_eq!(dsn.user(), Some("me@server"));
        assert_eq!(dsn.config.get_password(), Some(&b"pw"[..]));
        let dsn = Dsn::parse("postgres://me@server@host/db").unwrap();
        assert_eq!(dsn.user(), Some("me@server"));
        assert_eq!(dsn.config.get_password(), None);
        assert_eq!(dsn.describe(), "me@server@host:5432/db");

        // Encoded as the URL rules want, and an `@` after the host part.
        let dsn = Dsn::parse("postgres://u:Zx9%40Secret7@host/db").unwrap();
        assert_eq!(dsn.config.get_password(), Some(&b"Zx9@Secret7"[..]));
        let dsn = Dsn::parse("postgres://u:p@w@host/db?application_name=me@laptop").unwrap();
        assert_eq!(dsn.config.get_password(), Some(&b"p@w"[..]));
        assert_eq!(dsn.config.get_application_name(), Some("me@laptop"));
        assert_eq!(dsn.describe(), "u@host:5432/db");
    }

    #[test]
    fn a_password_with_at_never_shows() {
        for text in [
            "postgres://u:Zx9@Secret7@host/db",
            "postgres://u:Zx9@Secret7@host:5432/db?connect_timeout=3",
            "postgres://u:Zx9@Secret7@[::1]:5432/db",
        ] {
            let dsn = Dsn::parse(text).unwrap();
            assert!(!dsn.describe().contains("Secret7"), "{}", dsn.describe());
            assert!(!format!("{dsn:?}").contains("Secret7"), "{dsn:?}");
        }
        for bad in [
            "postgres://u:Zx9@Secret7@host:abc/db",
            "postgres://u:Zx9@Secret7@host/db?sslmode=sometimes",
            "postgres://u:Zx9@Secret7@host/db?nonsense=1",
        ] {
            let err = Dsn::parse(bad).unwrap_err();
            assert!(!err.contains("Secret7"), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let dsn = Dsn::parse("postgres://u:hunter2@h/db").unwrap();
        assert!(!format!("{dsn:?}").contains("hunter2"));
        assert!(!dsn.describe().contains("hunter2"));
    }
}
