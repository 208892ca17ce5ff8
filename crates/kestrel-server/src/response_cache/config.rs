//! The response cache's settings and how their flags are read: `--response-cache memory` or a
//! Redis URL, `--response-cache-size` (the in-memory cache's byte bound), `--response-cache-ttl`
//! and `--response-cache-timeout` (how long a request waits for the store before it runs on the
//! model anyway). A bad value is an error that names the flag.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where entries live.
#[derive(Clone, PartialEq, Eq)]
pub enum CacheBackend {
    /// In this process, bounded by `max_bytes`.
    Memory,
    /// A Redis-protocol server (Redis, Valkey): `redis://[user:password@]host:port[/db]` or
    /// `redis+unix:///path/to/socket`.
    Redis(String),
}

impl FromStr for CacheBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "memory" {
            return Ok(Self::Memory);
        }
        if s.starts_with("rediss://") {
            return Err(
                "TLS Redis URLs (rediss://) are not supported; reach Redis over a private network or a local TLS proxy"
                    .into(),
            );
        }
        if ["redis://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| s.starts_with(scheme))
        {
            redis::Client::open(s).map_err(|e| format!("invalid Redis URL {}: {e}", redact(s)))?;
            return Ok(Self::Redis(s.to_string()));
        }
        Err(format!(
            "expected `memory` or a Redis URL (redis://host:port/db), got {:?}",
            redact(s)
        ))
    }
}

/// Never prints a password.
impl fmt::Debug for CacheBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => write!(f, "memory"),
            Self::Redis(url) => write!(f, "{}", redact(url)),
        }
    }
}

impl fmt::Display for CacheBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A URL with its user and password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

pub const DEFAULT_MAX_BYTES: usize = 256 << 20;
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Loopback Redis answers in about 0.1 ms and a LAN one in about 1 ms; past this a lookup is
/// abandoned and the request runs on the model.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct ResponseCacheConfig {
    pub backend: CacheBackend,
    /// The in-memory cache's bound (`None`: [`DEFAULT_MAX_BYTES`]); a Redis server is bounded
    /// by its own `maxmemory`.
    pub max_bytes: Option<usize>,
    pub ttl: Duration,
    pub timeout: Duration,
}

impl ResponseCacheConfig {
    pub fn new(backend: CacheBackend) -> Self {
        Self {
            backend,
            max_bytes: None,
            ttl: DEFAULT_TTL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `90`, `90s`, `1500ms`, `10m`, `1h`, `7d` → a duration; zero is refused (an entry that expires
/// at once is no cache).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 30s, 10m or 1h, got {s:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (ms, s, m, h, d)"
            ))
        }
    };
    let d = Duration::try_from_secs_f64(number * seconds)
        .map_err(|_| format!("duration {s:?} is out of range"))?;
    if d.is_zero() {
        return Err(format!("the duration must be positive, got {s:?}"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends() {
        assert_eq!("memory".parse::<CacheBackend>(), Ok(CacheBackend::Memory));
        assert_eq!(
            "redis://127.0.0.1:6379/0".parse::<CacheBackend>(),
            Ok(CacheBackend::Redis("redis://127.0.0.1:6379/0".into()))
        );
        assert!("redis://h:1/0".parse::<CacheBackend>().is_ok());
        let tls = "rediss://h:1".parse::<CacheBackend>().unwrap_err();
        assert!(tls.contains("TLS"), "{tls}");
        let other = "memcached://h:1".parse::<CacheBackend>().unwrap_err();
        assert!(other.contains("expected `memory`"), "{other}");
        // A password never reaches an error message or a log line.
        let bad = "postgres://user:hunter2@h"
            .parse::<CacheBackend>()
            .unwrap_err();
        assert!(!bad.contains("hunter2"), "{bad}");
        let with_password = "redis://:hunter2@h:6379/1".parse::<CacheBackend>().unwrap();
        assert_eq!(with_password.to_string(), "redis://***@h:6379/1");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://u:p@h"), "redis://***@h");
        assert_eq!(redact("memory"), "memory");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("0").unwrap_err().contains("positive"));
        assert!(parse_duration("10 fortnights").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1e400").is_err());
    }
}
