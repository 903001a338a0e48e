//! Node addresses as users write them: `host:port`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A node's client address: a host name or IP address and a UDP port.
///
/// The host is also the TLS server name the node's certificate must carry. Accepted forms:
/// `host:port`, `1.2.3.4:port`, `[::1]:port`; a leading `scheme://` (as in etcd's
/// `https://127.0.0.1:2379`) and a trailing `/` are ignored.
///
/// # Examples
///
/// ```
/// use etch_client::Endpoint;
/// let ep: Endpoint = "localhost:7379".parse()?;
/// assert_eq!(ep.host(), "localhost");
/// assert_eq!(ep.port(), 7379);
/// assert_eq!(ep.to_string(), "localhost:7379");
/// # Ok::<(), etch_client::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// An endpoint from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// The host name or IP address (without brackets for IPv6).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidEndpoint {
            endpoint: s.to_owned(),
            reason,
        };
        let rest = s.trim();
        let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("missing ']' after an IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| invalid("expected host:port"))?;
            (host, port)
        } else {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| invalid("expected host:port"))?;
            if host.contains(':') {
                return Err(invalid("an IPv6 address must be written [addr]:port"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?;
        Ok(Endpoint::new(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Result<Endpoint> {
        s.parse()
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(
            ep("127.0.0.1:7379").expect("v4"),
            Endpoint::new("127.0.0.1", 7379)
        );
        assert_eq!(ep("[::1]:7379").expect("v6"), Endpoint::new("::1", 7379));
        assert_eq!(ep("[::1]:7379").expect("v6").to_string(), "[::1]:7379");
        assert_eq!(
            ep("https://node-1.example:2379/").expect("url"),
            Endpoint::new("node-1.example", 2379)
        );
        assert_eq!(
            ep(" localhost:1 ").expect("spaces"),
            Endpoint::new("localhost", 1)
        );
    }

    #[test]
    fn refused_forms() {
        for bad in [
            "",
            "localhost",
            ":7379",
            "host:0",
            "host:70000",
            "host:x",
            "::1:7379",
            "[::1",
        ] {
            let err = ep(bad).expect_err(bad);
            assert!(
                matches!(err, Error::InvalidEndpoint { ref endpoint, .. } if endpoint == bad),
                "{bad}: {err}"
            );
        }
    }
}
