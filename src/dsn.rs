//! A database connection string (URL or key=value form) with libpq's TLS
//! modes, and a `Debug` that never shows the password.
//!
//! tokio-postgres parses both forms but knows only `disable`, `prefer` and
//! `require`, and rejects `sslrootcert`. The TLS keys are therefore taken
//! out here (a small hand-written tokenizer: no maintained crate splits a
//! libpq string without also interpreting it) and the rest is handed to
//! tokio-postgres. Every key and value is checked here first, since
//! tokio-postgres' errors name neither; and a bare `@` in a URL's password
//! is encoded first, since tokio-postgres ends the user info at the first.

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
            split_url_params(&encode_user_info_ats(text))?
        } else {
            split_key_value_params(text)?
        };
        // Reached only by what the checks above let through. The error's
        // own text is just "invalid connection string"; its cause names
        // the option.
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|err: tokio_postgres::Error| {
                std::error::Error::source(&err).map_or_else(|| err.to_string(), ToString::to_string)
            })?;
        let mut tls = TlsMode::Prefer;
        let mut root_certs = None;
        for (key, value) in tls_params {
            match key.as_str() {
                "sslmode" => tls = parse_tls_mode(&value)?,
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

impl Dsn {
    /// The server this connection goes to, as written (host names in lower
    /// case, the port 5432 unless given): two DSNs with the same key reach
    /// the same server.
    pub fn server_key(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.to_ascii_lowercase(),
                Host::Unix(path) => path.display().to_string(),
            })
            .chain(self.config.get_hostaddrs().iter().map(|a| a.to_string()))
            .collect();
        let ports: Vec<String> = match self.config.get_ports() {
            [] => vec!["5432".into()],
            ports => ports.iter().map(u16::to_string).collect(),
        };
        format!("{}:{}", hosts.join(","), ports.join(","))
    }

    /// Whether the two open the same kind of connection to the same place
    /// as the same user (a fleet worker keeps a connection for the next
    /// target only then).
    pub fn same_connection(&self, other: &Dsn) -> bool {
        self.config == other.config && self.tls == other.tls && self.root_certs == other.root_certs
    }

    /// The database on that server (`dbname`, else the user's name).
    pub fn database_key(&self) -> String {
        let user = self.config.get_user().unwrap_or("");
        let db = self.config.get_dbname().unwrap_or(user);
        format!("{}/{db}", self.server_key())
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

/// libpq's keys that tokio-postgres does not take: told apart from typos.
const UNSUPPORTED_LIBPQ_KEYS: [&str; 22] = [
    "passfile",
    "client_encoding",
    "fallback_application_name",
    "replication",
    "gssencmode",
    "gsslib",
    "gssdelegation",
    "krbsrvname",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "require_auth",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "service",
];

/// What follows an unquoted password may be the rest of it, so an error
/// about it quotes neither its key nor its value.
const AFTER_PASSWORD_KEY_VALUE: &str = "the setting after `password` is not valid; if the \
     password holds a space, quote it: password='...'";
const AFTER_PASSWORD_URL: &str = "the URL parameter after `password` is not valid; if the \
     password holds `&`, write it as %26";

const NOT_A_CONNECTION_STRING: &str =
    "this is neither key=value pairs nor a postgres:// or postgresql:// URL";

fn strip_url_scheme(text: &str) -> Option<&str> {
    text.strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
}

type Params = Vec<(String, String)>;

fn parse_tls_mode(value: &str) -> Result<TlsMode, String> {
    Ok(match value {
        "disable" => TlsMode::Disable,
        "allow" | "prefer" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => {
            return Err(format!(
                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ));
        }
    })
}

/// Checks one setting as tokio-postgres will read it: its own errors say
/// only "invalid connection string", or name the key but not the value.
fn check_setting(key: &str, value: &str) -> Result<(), String> {
    let one_of = |choices: &[&str]| {
        if choices.contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "{key} `{value}` is not one of {}",
                choices.join(", ")
            ))
        }
    };
    let whole = |what: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!("{key} `{value}` is not a whole number{what}"))
        }
    };
    match key {
        "user" | "password" | "dbname" | "options" | "application_name" | "host"
        | "sslrootcert" => Ok(()),
        "sslmode" => parse_tls_mode(value).map(drop),
        "port" => value.split(',').try_for_each(check_port),
        "hostaddr" => value.split(',').try_for_each(|addr| {
            addr.parse::<std::net::IpAddr>()
                .map(drop)
                .map_err(|_| format!("hostaddr `{addr}` is not an IP address"))
        }),
        "connect_timeout" | "tcp_user_timeout" | "keepalives_idle" | "keepalives_interval" => {
            whole(" of seconds", value.parse::<i64>().is_ok())
        }
        "keepalives" => whole(" (0 turns them off)", value.parse::<u64>().is_ok()),
        "keepalives_retries" => whole("", value.parse::<u32>().is_ok()),
        "target_session_attrs" => one_of(&["any", "read-write", "read-only"]),
        "channel_binding" => one_of(&["disable", "prefer", "require"]),
        "load_balance_hosts" => one_of(&["disable", "random"]),
        "sslnegotiation" => one_of(&["postgres", "direct"]),
        "keepalives_count" => {
            Err("key `keepalives_count` is not supported (keepalives_retries is)".into())
        }
        _ if UNSUPPORTED_LIBPQ_KEYS.contains(&key) => Err(format!("key `{key}` is not supported")),
        _ => Err(format!("unknown key `{key}`")),
    }
}

/// An empty port is refused although libpq reads it as the default: it is
/// more often a variable that was not set (`host:${PORT}`) than a choice.
fn check_port(port: &str) -> Result<(), String> {
    if port.is_empty() {
        return Err("port is empty (leave it out for the default, 5432)".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port `{port}` is not a number"));
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(()),
        _ => Err(format!("port `{port}` is not between 1 and 65535")),
    }
}

/// Percent-decodes as libpq does, refusing a `%` that starts no escape
/// (tokio-postgres keeps it as it is); the error is the bad escape.
fn percent_decode_strict(text: &str) -> Result<Vec<u8>, String> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match (
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (Some(high), Some(low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            _ => return Err(text[i..].chars().take(3).collect()),
        }
    }
    Ok(out)
}

/// A percent-decoded part of a URL; `what` names it in errors.
fn decoded(text: &str, what: &str) -> Result<String, String> {
    let bytes = percent_decode_strict(text).map_err(|escape| {
        format!("{what} has `{escape}`, which is not a percent-encoded byte (write `%` as %25)")
    })?;
    String::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

/// A host, which may be a socket folder: then any bytes will do.
fn check_host(text: &str, what: &str) -> Result<(), String> {
    if text.starts_with('/') || text.starts_with("%2F") || text.starts_with("%2f") {
        check_secret(text, what)
    } else {
        decoded(text, what).map(drop)
    }
}

/// A password (any bytes), whose text no error shows.
fn check_secret(text: &str, what: &str) -> Result<(), String> {
    percent_decode_strict(text).map(drop).map_err(|_| {
        format!("{what} has a `%` that starts no percent-encoded byte (write `%` as %25)")
    })
}

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

/// A URL cut where tokio-postgres cuts it: the user info ends at the first
/// `@` (the only one in the authority, once [`encode_user_info_ats`] has
/// run), the host part at the next `/` or `?`, the path at the next `?`.
struct UrlParts<'a> {
    user_info: Option<&'a str>,
    hosts: &'a str,
    dbname: Option<&'a str>,
    /// Everything before the `?` of the query.
    base: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn cut(text: &'a str) -> Option<UrlParts<'a>> {
        let after = strip_url_scheme(text)?;
        let (user_info, rest) = match after.split_once('@') {
            Some((info, rest)) => (Some(info), rest),
            None => (None, after),
        };
        let (hosts, rest) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        Some(UrlParts {
            user_info,
            hosts,
            dbname: path.strip_prefix('/'),
            base: &text[..text.len() - query.map_or(0, |q| q.len() + 1)],
            query,
        })
    }
}

/// Checks a URL and splits the TLS keys out of its query string.
fn split_url_params(text: &str) -> Result<(String, Params), String> {
    let Some(url) = UrlParts::cut(text) else {
        return Err(NOT_A_CONNECTION_STRING.into());
    };
    if let Some(info) = url.user_info {
        let (user, password) = match info.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (info, None),
        };
        decoded(user, "the user name in the URL")?;
        if let Some(password) = password {
            check_secret(password, "the password in the URL")?;
        }
    }
    if url.hosts.contains('@') {
        // A `/` or `?` in the password ended the authority before its `@`,
        // so what looks like the host may hold the rest of the password.
        return Err(
            "the host part of the URL holds `@`: write `/`, `?` and `@` in a user \
             name or password as %2F, %3F and %40"
                .into(),
        );
    }
    for chunk in url.hosts.split(',').filter(|_| !url.hosts.is_empty()) {
        let (host, port) = if let Some(inner) = chunk.strip_prefix('[') {
            let Some((address, after)) = inner.split_once(']') else {
                return Err(format!("the host `{chunk}` has no closing `]`"));
            };
            match after.strip_prefix(':') {
                Some(port) => (address, Some(port)),
                None if after.is_empty() => (address, None),
                None => {
                    return Err(format!(
                        "the host `[{address}]` is followed by `{after}`, not by `:` and a port"
                    ));
                }
            }
        } else {
            match chunk.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (chunk, None),
            }
        };
        check_host(host, "the host in the URL")?;
        if let Some(port) = port {
            check_port(&decoded(port, "the port in the URL")?)?;
        }
    }
    if let Some(dbname) = url.dbname {
        decoded(dbname, "the database name in the URL")?;
    }
    let Some(query) = url.query else {
        return Ok((text.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    let mut after_password = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = match check_url_param(pair) {
            Ok(checked) => checked,
            Err(_) if after_password => return Err(AFTER_PASSWORD_URL.into()),
            Err(message) => return Err(message),
        };
        after_password = key == "password";
        match value {
            Some(value) => tls.push((key, value)),
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        url.base.to_owned()
    } else {
        format!("{}?{}", url.base, kept.join("&"))
    };
    Ok((rest, tls))
}

/// Checks one `key=value` of a URL's query string; returns the key and,
/// for a TLS key (taken out here), the value decoded.
fn check_url_param(pair: &str) -> Result<(String, Option<String>), String> {
    let Some((key, value)) = pair.split_once('=') else {
        return Err(format!("the URL parameter `{pair}` has no `=`"));
    };
    let key = decoded(key, "a parameter name in the URL")?;
    let what = format!("the value of `{key}` in the URL");
    match key.as_str() {
        "password" => check_secret(value, &what)?,
        "host" => check_host(value, &what)?,
        _ => check_setting(&key, &decoded(value, &what)?)?,
    }
    let value = if TLS_KEYS.contains(&key.as_str()) {
        Some(decoded(value, &what)?)
    } else {
        None
    };
    Ok((key, value))
}

/// Checks a `key=value key='quoted value'` string, splits the TLS keys out
/// and rebuilds the rest with every value quoted.
fn split_key_value_params(text: &str) -> Result<(String, Params), String> {
    let mut kept = String::new();
    let mut tls = Vec::new();
    let mut chars = text.chars().peekable();
    let mut after_password = false;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let (key, value) = match key_value_pair(&mut chars) {
            Ok(pair) => pair,
            Err(_) if after_password => return Err(AFTER_PASSWORD_KEY_VALUE.into()),
            Err(message) => return Err(message),
        };
        after_password = key == "password";
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

/// Reads and checks the next `key=value`.
fn key_value_pair(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<(String, String), String> {
    let mut key = String::new();
    while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
        key.push(c);
    }
    // A word that cannot be a key is likely a mistyped URL, which may hold
    // a password: it is not quoted.
    let plain = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        return Err(NOT_A_CONNECTION_STRING.into());
    }
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
    if chars.next() != Some('=') {
        return Err(format!(
            "expected `=` after `{key}` (write key=value pairs or a postgres:// URL)"
        ));
    }
    if key.is_empty() {
        return Err("a `=` with no key before it".into());
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
    check_setting(&key, &value)?;
    Ok((key, value))
}

/// Hides passwords in text that may quote a connection string the tool did
/// not parse (a DSN given where another argument was expected, say): the
/// password of every `scheme://user:password@...` (up to the last `@`
/// before the next space or quote, since a password may hold `/` or `@`)
/// and every `password=...` value becomes `***`. Errs on the side of
/// hiding more.
pub fn redact_secrets(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("://") && !lower.contains("password") {
        return text.to_owned();
    }
    let ends = |c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`');
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut hidden: Vec<(usize, usize)> = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let start = from + found + 3;
        let end = text[start..].find(ends).map_or(text.len(), |n| start + n);
        let segment = &text[start..end];
        if let Some(at) = segment.rfind('@')
            && let Some(colon) = segment[..at].find(':')
        {
            hidden.push((start + colon + 1, start + at));
        }
        from = end.max(start);
    }
    let mut search = 0;
    while let Some(found) = lower[search..].find("password") {
        let key_end = search + found + "password".len();
        let after = text[key_end..].trim_start();
        let value_start = text.len() - after.len();
        if let Some(value) = after.strip_prefix('=') {
            let value = value.trim_start();
            let start = text.len() - value.len();
            let end = if let Some(quoted) = value.strip_prefix('\'') {
                let mut chars = quoted.char_indices();
                let mut close = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '\'' => {
                            close = i;
                            break;
                        }
                        _ => {}
                    }
                }
                start + 1 + close
            } else {
                // As libpq reads it: an unquoted value ends at whitespace.
                value
                    .find(char::is_whitespace)
                    .map_or(text.len(), |n| start + n)
            };
            let start = if value.starts_with('\'') {
                start + 1
            } else {
                start
            };
            if end > start {
                hidden.push((start, end));
            }
        }
        search = value_start.max(key_end);
    }
    hidden.sort();
    for (start, end) in hidden {
        if start < rest {
            continue;
        }
        out.push_str(&text[rest..start]);
        out.push_str("***");
        rest = end;
    }
    out.push_str(&text[rest..]);
    out
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
    fn errors_name_the_setting_and_its_value() {
        for (text, expected) in [
            ("postgres://u:pw@h:abc/db", "port `abc` is not a number"),
            ("postgres://u:pw@h:/db", "port is empty"),
            (
                "postgres://u:pw@h:70000/db",
                "port `70000` is not between 1 and 65535",
            ),
            ("postgres://u:pw@h:5432,h2:x/db", "port `x` is not a number"),
            (
                "postgres://u:pw@h/db?port=abc",
                "port `abc` is not a number",
            ),
            ("postgres://u:pw@h/db?foo=bar", "unknown key `foo`"),
            (
                "postgres://u:pw@h/db?sslcert=/c.pem",
                "key `sslcert` is not supported",
            ),
            (
                "postgres://u:pw@h/db?connect_timeout=soon",
                "connect_timeout `soon` is not a whole number of seconds",
            ),
            (
                "postgres://u:pw@h/db?connect_timeout",
                "the URL parameter `connect_timeout` has no `=`",
            ),
            (
                "postgres://u:pw@h/db?sslmode=sometimes",
                "sslmode `sometimes` is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full",
            ),
            (
                "postgres://u:pw@h/d%zzb",
                "the database name in the URL has `%zz`, which is not a percent-encoded byte",
            ),
            (
                "postgres://u:pw@h/d%ffb",
                "the database name in the URL is not UTF-8 once percent-decoded",
            ),
            (
                "postgres://u:pw@h/db?application_name=50%",
                "the value of `application_name` in the URL has `%`",
            ),
            (
                "postgres://u:pw@[::1/db",
                "the host `[::1` has no closing `]`",
            ),
            ("host=h port=abc", "port `abc` is not a number"),
            ("host=h port=", "port is empty"),
            ("host=h port=''", "port is empty"),
            ("host=h,h2 port=5432,x", "port `x` is not a number"),
            ("host=h foo=bar", "unknown key `foo`"),
            ("host=h sslcert=/c.pem", "key `sslcert` is not supported"),
            (
                "host=h application_name='deploy",
                "unterminated quoted value for `application_name`",
            ),
            (
                "host=h connect_timeout=5s",
                "connect_timeout `5s` is not a whole number of seconds",
            ),
            ("host=h dbname", "expected `=` after `dbname`"),
            ("host=h =x", "`=` with no key before it"),
            ("host=h sslmode=bogus", "sslmode `bogus` is not one of"),
            (
                "host=h keepalives=yes",
                "keepalives `yes` is not a whole number",
            ),
            (
                "host=h target_session_attrs=primary",
                "target_session_attrs `primary` is not one of any, read-write, read-only",
            ),
            (
                "host=h hostaddr=db.internal",
                "hostaddr `db.internal` is not an IP address",
            ),
        ] {
            let err = Dsn::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn an_empty_port_list_entry_is_not_a_port() {
        let dsn = Dsn::parse("host=h,h2 port=5432,5433").unwrap();
        assert_eq!(dsn.config.get_ports(), [5432, 5433]);
        let dsn = Dsn::parse("postgres://u@h:6000,h2/db").unwrap();
        assert_eq!(dsn.config.get_ports(), [6000, 5432]);
    }

    #[test]
    fn a_setting_after_a_password_is_not_quoted() {
        // What follows an unquoted password may be the rest of it.
        for (bad, secret) in [
            ("host=h password=correct horse battery", "horse"),
            ("host=h password=correct horse=battery", "horse"),
            ("host=h password=correct port=battery", "battery"),
            ("host=h password=correct horse='battery", "horse"),
            ("postgres://u@h/db?password=hun&ter7=x", "ter7"),
            ("postgres://u@h/db?password=hun&port=ter7", "ter7"),
            ("postgres://u:hun%zzter7@h/db", "zzter7"),
            ("postgres://u:hunter7/x@y@h/db", "x@y"),
            ("postgre://u:hunter7@h/db", "hunter7"),
            ("postgres:/u:hunter7@h/db", "hunter7"),
        ] {
            let err = Dsn::parse(bad).unwrap_err();
            assert!(!err.contains(secret), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let dsn = Dsn::parse("postgres://u:hunter2@h/db").unwrap();
        assert!(!format!("{dsn:?}").contains("hunter2"));
        assert!(!dsn.describe().contains("hunter2"));
    }

    #[test]
    fn secrets_in_free_text_are_hidden() {
        for (text, expected) in [
            (
                "unexpected argument 'postgres://u:Zx9@Secret7@h:5432/db' found",
                "unexpected argument 'postgres://u:***@h:5432/db' found",
            ),
            (
                "`postgresql://me:a/b?c@db/x?sslmode=require` is not a duration",
                "`postgresql://me:***@db/x?sslmode=require` is not a duration",
            ),
            (
                "postgres://me@db/x and host=h",
                "postgres://me@db/x and host=h",
            ),
            (
                "host=h password=hunter2 port=1",
                "host=h password=*** port=1",
            ),
            (
                r"host=h PASSWORD = 'it\'s secret' user=u",
                "host=h PASSWORD = '***' user=u",
            ),
            ("the password is needed", "the password is needed"),
        ] {
            assert_eq!(redact_secrets(text), expected, "{text}");
        }
    }
}
