//! Where a webhook may be sent: URL rules and address classification against SSRF.
//!
//! The same rules run when an endpoint is created or updated (on the URL) and at delivery (on
//! every address the name resolves to, right before dialling it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

pub const MAX_URL_LEN: usize = 2048;

/// Which targets this deployment accepts. Both relaxations are off in production.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Loopback, private, link-local and other non-global addresses (local development only).
    pub allow_private: bool,
    /// Plain `http` URLs (local development only).
    pub allow_insecure: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("must be at most {MAX_URL_LEN} characters, counted as stored: after normalisation, where each byte of a non-ASCII character is percent-encoded (3 characters) and a non-ASCII host is punycode")]
    TooLong,
    #[error("must be an absolute URL")]
    NotAbsolute,
    #[error("must use https")]
    HttpsRequired,
    #[error("must use http or https")]
    UnsupportedScheme,
    #[error("must not contain a user name or password")]
    Credentials,
    #[error("must name a host")]
    NoHost,
    #[error("must not point to a private, loopback, link-local or otherwise non-public address")]
    NonPublicTarget,
}

impl TargetPolicy {
    /// Production: https only, public targets only.
    pub const STRICT: Self = Self {
        allow_private: false,
        allow_insecure: false,
    };
    /// Local development: a receiver on `http://localhost` works.
    pub const LOCAL_DEVELOPMENT: Self = Self {
        allow_private: true,
        allow_insecure: true,
    };

    /// Checks a subscriber URL and returns it parsed. The rules judge the normalised form
    /// (`Url::as_str`), which is what is stored and dialled, so what passes once passes again:
    /// `check_url(check_url(x)?.as_str())` gives the same URL.
    pub fn check_url(&self, text: &str) -> Result<Url, UrlError> {
        self.url_problems(text)
            .map_err(|mut problems| problems.remove(0))
    }

    /// [`TargetPolicy::check_url`], with every problem of the URL rather than the first (at
    /// least one in the error). A URL that is too long or does not parse has no other.
    pub fn url_problems(&self, text: &str) -> Result<Url, Vec<UrlError>> {
        // A cheap bound before parsing; normalisation rarely shortens a URL.
        if text.chars().count() > MAX_URL_LEN {
            return Err(vec![UrlError::TooLong]);
        }
        let url = Url::parse(text).map_err(|_| vec![UrlError::NotAbsolute])?;
        if url.as_str().len() > MAX_URL_LEN {
            return Err(vec![UrlError::TooLong]);
        }
        let mut problems = Vec::new();
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure => {}
            "http" => problems.push(UrlError::HttpsRequired),
            _ => problems.push(UrlError::UnsupportedScheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            problems.push(UrlError::Credentials);
        }
        let public = match url.host() {
            None => {
                problems.push(UrlError::NoHost);
                true
            }
            Some(Host::Ipv4(ip)) => is_global(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => is_global(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => !is_local_name(name),
        };
        if !public && !self.allow_private {
            problems.push(UrlError::NonPublicTarget);
        }
        if problems.is_empty() {
            Ok(url)
        } else {
            Err(problems)
        }
    }

    /// Whether an address may be dialled.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.allow_private || is_global(ip)
    }
}

/// Names that resolve to this machine or its network by convention, whatever DNS says.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "localhost.localdomain"
        || name.ends_with(".internal")
        || name.ends_with(".local")
}

/// Whether an address is publicly routable unicast. Everything else (loopback, private,
/// link-local and the cloud metadata address, CGNAT, multicast, documentation, reserved, and v6
/// forms that embed such a v4 address) is refused.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    const NON_GLOBAL: [([u8; 4], u32); 16] = [
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // CGNAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, cloud metadata
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
        ([255, 255, 255, 255], 32),
    ];
    !NON_GLOBAL
        .iter()
        .any(|(net, prefix)| in_v4(ip, *net, *prefix))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // Forms that carry a v4 address are judged by that address, so ::ffff:127.0.0.1 or the
    // NAT64 form of 169.254.169.254 cannot sneak past.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_global_v4(embedded_v4(&segments[6..8]));
    }
    if segments[0] == 0x2002 {
        return is_global_v4(embedded_v4(&segments[1..3]));
    }
    // Only global unicast (2000::/3) is public; within it, carve out the special blocks.
    let global_unicast = segments[0] & 0xe000 == 0x2000;
    let ietf_assignments = segments[0] == 0x2001 && segments[1] < 0x0200; // 2001::/23, Teredo
    let documentation = (segments[0] == 0x2001 && segments[1] == 0x0db8) // 2001:db8::/32
        || segments[0] & 0xfff0 == 0x3ff0; // 3fff::/20
    global_unicast && !ietf_assignments && !documentation
}

fn embedded_v4(pair: &[u16]) -> Ipv4Addr {
    let [a, b] = pair[0].to_be_bytes();
    let [c, d] = pair[1].to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy::STRICT;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn non_global_ipv4_is_refused() {
        for text in [
            "0.0.0.0",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_global(ip(text)), "{text} must be refused");
        }
    }

    #[test]
    fn public_ipv4_is_accepted() {
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
        ] {
            assert!(is_global(ip(text)), "{text} must be accepted");
        }
    }

    #[test]
    fn non_global_ipv6_is_refused() {
        for text in [
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001::1",
            "::127.0.0.1",
            "100::1",
            "fec0::1",
        ] {
            assert!(!is_global(ip(text)), "{text} must be refused");
        }
    }

    #[test]
    fn public_ipv6_is_accepted() {
        for text in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_global(ip(text)), "{text} must be accepted");
        }
    }

    #[test]
    fn urls_must_be_absolute_https_without_credentials() {
        assert!(STRICT.check_url("https://hooks.example.com/in?x=1").is_ok());
        assert_eq!(
            STRICT.check_url("/relative").unwrap_err(),
            UrlError::NotAbsolute
        );
        assert_eq!(
            STRICT.check_url("not a url").unwrap_err(),
            UrlError::NotAbsolute
        );
        assert_eq!(
            STRICT.check_url("http://hooks.example.com").unwrap_err(),
            UrlError::HttpsRequired
        );
        assert_eq!(
            STRICT.check_url("ftp://hooks.example.com").unwrap_err(),
            UrlError::UnsupportedScheme
        );
        assert_eq!(
            STRICT
                .check_url("https://user:pw@hooks.example.com")
                .unwrap_err(),
            UrlError::Credentials
        );
        assert_eq!(
            STRICT
                .check_url("https://user@hooks.example.com")
                .unwrap_err(),
            UrlError::Credentials
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(STRICT.check_url(&long).unwrap_err(), UrlError::TooLong);
    }

    #[test]
    fn private_hosts_in_any_notation_are_refused() {
        for url in [
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f.0.0.1/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[fe80::1]/",
            "https://10.0.0.1/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://api.localhost/",
            "https://0.0.0.0/",
            "https://100.64.1.1/",
            "https://metadata.google.internal/",
        ] {
            assert_eq!(
                STRICT.check_url(url).unwrap_err(),
                UrlError::NonPublicTarget,
                "{url}"
            );
        }
    }

    #[test]
    fn local_development_settings_relax_the_rules() {
        let local = TargetPolicy::LOCAL_DEVELOPMENT;
        assert!(local.check_url("http://localhost:8080/hook").is_ok());
        assert!(local.check_url("http://127.0.0.1:9000/").is_ok());
        assert!(local.allows_address(ip("127.0.0.1")));
        assert!(!STRICT.allows_address(ip("127.0.0.1")));
        // Credentials stay forbidden even locally.
        assert_eq!(
            local.check_url("http://a:b@localhost/").unwrap_err(),
            UrlError::Credentials
        );
    }
}
