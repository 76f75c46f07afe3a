//! Where a script's outbound HTTP may go: the app's allowed hosts and the
//! address rules behind them.
//!
//! Rule: nothing is allowed by default. A request goes out only when its
//! scheme, host and port match one of the app's [`HostPattern`]s, *and*
//! every address it will connect to is a public one or lies in a range the
//! operator allowed (`PICLOUD_OUTBOUND_ALLOW_NETS`). The address check is
//! made on the resolved addresses, and the connection is made to the
//! address that was checked, so a name that resolves to a loopback,
//! private, link-local or metadata address is refused however it is
//! spelled (the SSRF guard). Redirects are requests of their own, checked
//! the same way.
//!
//! This module is the policy only, with no I/O; the runtime's sender
//! (`runtime::http`) applies it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use ipnet::IpNet;

/// One allowed destination: `scheme://host[:port]`, where host is an exact
/// name (or IP address) or `*.domain` for every name under `domain`, and
/// the port defaults to the scheme's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPattern {
    https: bool,
    host: String,
    wildcard: bool,
    port: u16,
}

/// A host pattern that does not parse. The message says what is expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid host pattern '{pattern}': {why}; expected scheme://host[:port], such as https://api.example.com or https://*.example.com:8443"
)]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl HostPattern {
    /// Whether a request to `scheme://host:port` matches.
    pub fn matches(&self, https: bool, host: &str, port: u16) -> bool {
        if self.https != https || self.port != port {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

impl FromStr for HostPattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| PatternError {
            pattern: text.escape_debug().to_string(),
            why,
        };
        let (scheme, rest) = text
            .trim()
            .split_once("://")
            .ok_or_else(|| err("no scheme"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(err("the scheme must be http or https")),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(err("a pattern names a host, not a path or query"));
        }
        if authority.contains('@') {
            return Err(err("a pattern has no user name or password"));
        }
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| err("an unclosed '['"))?;
            addr.parse::<Ipv6Addr>()
                .map_err(|_| err("not an IPv6 address between '[' and ']'"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| err("junk after ']'"))?),
            };
            (addr.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(err("the port must be a number from 1 to 65535")),
            },
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(domain) => (true, domain.to_owned()),
            None => (false, host),
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        if host.contains('*') {
            return Err(err(
                "'*' may only be a whole first label, as in *.example.com",
            ));
        }
        if host.parse::<Ipv6Addr>().is_err()
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(err("a host is letters, digits, '-' and '.'"));
        }
        if wildcard && !host.contains('.') {
            return Err(err(
                "a wildcard needs a domain of two labels or more, as in *.example.com",
            ));
        }
        Ok(HostPattern {
            https,
            host,
            wildcard,
            port,
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let star = if self.wildcard { "*." } else { "" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{star}{}:{}", self.host, self.port)
        }
    }
}

/// Why an address is not public, if it is not: the SSRF guard refuses it
/// unless the operator allowed a range that holds it.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                // fc00::/7, which holds fd00:ec2::254 (a cloud metadata address).
                Some("private")
            } else if v6.segments()[..6] == [0, 0, 0, 0, 0, 0] || first == 0x64 {
                // IPv4-compatible and NAT64 forms can smuggle a private v4.
                Some("an IPv4 translation")
            } else {
                None
            }
        }
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4 == Ipv4Addr::new(169, 254, 169, 254) {
        Some("metadata")
    } else if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if v4.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("shared (carrier-grade NAT)")
    } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else {
        None
    }
}

/// The address rule: `Ok` when `ip` may be connected to, else why not.
pub fn check_address(ip: IpAddr, allowed: &[IpNet]) -> Result<(), &'static str> {
    match special_address(ip) {
        Some(kind) if !allowed.iter().any(|net| net.contains(&ip)) => Err(kind),
        _ => Ok(()),
    }
}

/// Parse `PICLOUD_OUTBOUND_ALLOW_NETS`: address ranges in CIDR form,
/// separated by commas (`127.0.0.0/8,10.1.0.0/16`). An address alone is a
/// range of one.
pub fn parse_nets(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("'{s}' is not an address range such as 127.0.0.0/8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_parse_to_a_canonical_form() {
        assert_eq!(
            p("https://API.example.com").to_string(),
            "https://api.example.com:443"
        );
        assert_eq!(
            p("http://example.com/").to_string(),
            "http://example.com:80"
        );
        assert_eq!(
            p("https://*.example.com:8443").to_string(),
            "https://*.example.com:8443"
        );
        assert_eq!(
            p("http://127.0.0.1:8080").to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(p("http://[::1]:81").to_string(), "http://[::1]:81");
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "https://*.com",
            "https://a.*.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://exa mple.com",
            "https://",
        ] {
            let e = bad.parse::<HostPattern>().unwrap_err();
            assert!(
                e.to_string().contains("expected scheme://host[:port]"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        let exact = p("https://api.example.com");
        assert!(exact.matches(true, "api.example.com", 443));
        assert!(exact.matches(true, "API.example.com.", 443));
        assert!(!exact.matches(false, "api.example.com", 443));
        assert!(!exact.matches(true, "api.example.com", 8443));
        assert!(!exact.matches(true, "x.api.example.com", 443));
        let wild = p("https://*.example.com");
        assert!(wild.matches(true, "a.example.com", 443));
        assert!(wild.matches(true, "a.b.example.com", 443));
        assert!(!wild.matches(true, "example.com", 443));
        assert!(!wild.matches(true, "badexample.com", 443));
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_special() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("192.168.0.1", "private"),
            ("172.16.0.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "private"),
        ] {
            assert_eq!(special_address(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert_eq!(special_address(public.parse().unwrap()), None, "{public}");
        }
        let nets = parse_nets("127.0.0.0/8, ::1").unwrap();
        assert_eq!(check_address("127.0.0.1".parse().unwrap(), &nets), Ok(()));
        assert_eq!(check_address("::1".parse().unwrap(), &nets), Ok(()));
        assert_eq!(
            check_address("10.0.0.1".parse().unwrap(), &nets),
            Err("private")
        );
        assert!(parse_nets("localhost").is_err());
    }
}
