//! Redirect URIs: which may be registered for a client, and which given URI matches a
//! registered one (exactly; RFC 8252 §7.3 loopback redirects may differ in the port only).

/// Whether `given` matches one of the registered redirect URIs.
pub fn redirect_allowed(registered: &[String], given: &str) -> bool {
    registered.iter().any(|r| r == given || loopback_match(r, given))
}

/// Splits `:PORT` off the front of what follows a loopback host; the port must be a number
/// from 1 to 65535 written without a sign or leading zeros.
fn strip_port(rest: &str) -> Option<&str> {
    let Some(after) = rest.strip_prefix(':') else { return Some(rest) };
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let port = &after[..digits];
    let valid = !port.is_empty() && !port.starts_with('0') && port.parse::<u16>().is_ok_and(|p| p >= 1);
    valid.then(|| &after[digits..])
}

fn loopback_match(registered: &str, given: &str) -> bool {
    for host in ["http://127.0.0.1", "http://[::1]"] {
        if let (Some(r), Some(g)) = (registered.strip_prefix(host), given.strip_prefix(host)) {
            return matches!((strip_port(r), strip_port(g)), (Some(a), Some(b)) if a == b && (a.is_empty() || a.starts_with('/')));
        }
    }
    false
}

/// Whether a redirect URI may be registered: https, a loopback IP over http (with a valid port,
/// if any), or a private-use scheme (`com.example.app:/cb`); absolute, no fragment, no wildcard.
pub fn redirect_registrable(uri: &str) -> Result<(), String> {
    if uri.contains('#') || uri.contains('*') || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("redirect URI {uri:?}: no fragments, wildcards or spaces"));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!("redirect URI {uri:?} is not absolute"));
    };
    let ok = match scheme {
        "https" => rest.starts_with("//") && rest.len() > 2,
        "http" => {
            ["//127.0.0.1", "//[::1]"].iter().any(|h| {
                rest.strip_prefix(h)
                    .and_then(strip_port)
                    .is_some_and(|after| after.is_empty() || after.starts_with('/'))
            }) && !rest.contains('@')
        }
        s => s.contains('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("redirect URI {uri:?}: use https, http on 127.0.0.1/[::1], or a private-use scheme"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_match_exactly_except_loopback_ports() {
        let reg = vec!["https://portal.example.com/cb".to_string(), "http://127.0.0.1/callback".to_string()];
        assert!(redirect_allowed(&reg, "https://portal.example.com/cb"));
        assert!(!redirect_allowed(&reg, "https://portal.example.com/cb/"));
        assert!(!redirect_allowed(&reg, "https://portal.example.com/c"));
        assert!(!redirect_allowed(&reg, "https://portal.example.com/cb?x=1"));
        assert!(!redirect_allowed(&reg, "https://portal.example.co/cb"));
        assert!(redirect_allowed(&reg, "http://127.0.0.1:49152/callback"));
        assert!(redirect_allowed(&reg, "http://127.0.0.1/callback"));
        assert!(redirect_allowed(&reg, "http://127.0.0.1:65535/callback"));
        assert!(redirect_allowed(&reg, "http://127.0.0.1:1/callback"));
        assert!(!redirect_allowed(&reg, "http://127.0.0.1:49152/callbacks"));
        assert!(!redirect_allowed(&reg, "http://127.0.0.1:49152@evil.example/callback"));
        assert!(!redirect_allowed(&reg, "http://127.0.0.1.evil.example/callback"));
        assert!(!redirect_allowed(&reg, "http://localhost:49152/callback"));
        assert!(!redirect_allowed(&reg, "https://127.0.0.1:49152/callback"));
        // Ports are numbers in range, not five digits.
        for bad in ["99999", "65536", "0", "00080", "", "-1", "+80", "８０"] {
            assert!(!redirect_allowed(&reg, &format!("http://127.0.0.1:{bad}/callback")), "port {bad:?}");
        }
    }

    #[test]
    fn registrable_redirect_uris() {
        assert!(redirect_registrable("https://ci.example.com/oauth/cb").is_ok());
        assert!(redirect_registrable("http://127.0.0.1/callback").is_ok());
        assert!(redirect_registrable("com.example.app:/cb").is_ok());
        assert!(redirect_registrable("http://ci.example.com/cb").is_err());
        assert!(redirect_registrable("http://127.0.0.1.evil.com/cb").is_err());
        assert!(redirect_registrable("http://127.0.0.1@evil.com/cb").is_err());
        assert!(redirect_registrable("http://127.0.0.1:8080/cb").is_ok());
        assert!(redirect_registrable("http://127.0.0.1:99999/cb").is_err());
        assert!(redirect_registrable("http://127.0.0.1:0/cb").is_err());
        assert!(redirect_registrable("https://*.example.com/cb").is_err());
        assert!(redirect_registrable("https://ci.example.com/cb#x").is_err());
        assert!(redirect_registrable("/relative").is_err());
    }
}
