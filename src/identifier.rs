//! Agent ids: what an id may look like, so that an operator reading a list, or a model reading a
//! verdict, is never shown one id that passes for another.
//!
//! An agent id is an absolute URI (RFC 3986) of printable ASCII, at most 256 bytes:
//! - **scheme**: a lowercase letter, then lowercase letters, digits, `+`, `-` or `.`. Not `user`
//!   (in any case: people are named `user:…`, and only on an agent's word), `file`, `data` or
//!   `javascript`.
//! - **host**, when the id has one (`scheme://host/…`): a lowercase DNS name (letters, digits,
//!   `-`, `.`; an internationalized name as its punycode `xn--` labels), optionally `:port`, and
//!   no user information (`name@`).
//! - **the rest**: printable ASCII except `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|` and `}`;
//!   anything else percent-encoded.
//!
//! ASCII only is what rules out look-alikes: no letter from another script that looks like a
//! Latin one, no bidirectional or zero-width character, and nothing that Unicode normalization
//! could change (ASCII text is already in NFC).
//!
//! New agents must follow the rule ([`check_agent_id`]). Certificates issued before it keep
//! verifying unless their id holds an invisible or direction-changing character
//! ([`is_deceptive`]), which no verifier accepts.
//!
//! ```
//! use agentseal::identifier::{check_agent_id, AgentIdError};
//!
//! assert!(check_agent_id("agent://acme.example/code-reviewer").is_ok());
//! assert!(check_agent_id("spiffe://prod.acme.example/ns/ci/sa/deployer").is_ok());
//! // A Cyrillic "а" in the host, an upper-case host, and a file path are refused.
//! assert_eq!(check_agent_id("agent://\u{430}cme.example/x"), Err(AgentIdError::NotAscii));
//! assert_eq!(check_agent_id("agent://Acme.example/x"), Err(AgentIdError::BadHost));
//! assert!(matches!(check_agent_id("file:///etc/passwd"), Err(AgentIdError::ReservedScheme(_))));
//! ```

/// Longest agent id, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 256;

/// Schemes an agent id may not use.
const RESERVED_SCHEMES: [&str; 4] = ["user", "file", "data", "javascript"];

/// Why a string is not an acceptable agent id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentIdError {
    /// Empty, or longer than [`MAX_AGENT_ID_LEN`] bytes.
    #[error("an agent id is 1 to {MAX_AGENT_ID_LEN} bytes")]
    Length,
    /// A character outside printable ASCII (spaces and control characters included).
    #[error(
        "an agent id is printable ASCII: percent-encode other characters, write hosts in punycode"
    )]
    NotAscii,
    /// No scheme, or a scheme that is not lowercase letters, digits, `+`, `-`, `.`.
    #[error("an agent id starts with a lowercase scheme, such as agent:")]
    BadScheme,
    /// A scheme agent ids may not use.
    #[error("the scheme {0:?} is not for agents")]
    ReservedScheme(String),
    /// A host that is not a lowercase DNS name (with an optional port), or user information.
    #[error("the host of an agent id is a lowercase DNS name (punycode for other scripts)")]
    BadHost,
    /// A character RFC 3986 does not allow unencoded.
    #[error("the character {0:?} must be percent-encoded in an agent id")]
    BadCharacter(char),
}

/// Checks `id` against the agent-id rule (see the module docs).
pub fn check_agent_id(id: &str) -> Result<(), AgentIdError> {
    if id.is_empty() || id.len() > MAX_AGENT_ID_LEN {
        return Err(AgentIdError::Length);
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AgentIdError::NotAscii);
    }
    let Some((scheme, rest)) = id.split_once(':') else {
        return Err(AgentIdError::BadScheme);
    };
    let mut scheme_chars = scheme.chars();
    let scheme_ok = scheme_chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && scheme_chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if RESERVED_SCHEMES
        .iter()
        .any(|reserved| scheme.eq_ignore_ascii_case(reserved))
    {
        return Err(AgentIdError::ReservedScheme(scheme.to_owned()));
    }
    if !scheme_ok || rest.is_empty() {
        return Err(AgentIdError::BadScheme);
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| matches!(c, '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}'))
    {
        return Err(AgentIdError::BadCharacter(bad));
    }
    if let Some(after) = rest.strip_prefix("//") {
        let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
        check_authority(authority)?;
    }
    Ok(())
}

/// `host[:port]`: a lowercase DNS name, no user information.
fn check_authority(authority: &str) -> Result<(), AgentIdError> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !port_ok || !host.split('.').all(label_ok) {
        return Err(AgentIdError::BadHost);
    }
    Ok(())
}

/// Whether `text` holds a character that changes how text around it is shown without being
/// seen itself: control characters, bidirectional controls (which can make `gpj.exe` read
/// `exe.jpg`), zero-width and other invisible formatting characters, and whitespace other than
/// the ASCII space. No agent id may hold one, whenever it was made: verifiers refuse such a
/// certificate as `malformed`.
pub fn is_deceptive(text: &str) -> bool {
    text.chars().any(|c| {
        c.is_control()
            || (c.is_whitespace() && c != ' ')
            || matches!(
                c,
                '\u{00AD}'
                    | '\u{034F}'
                    | '\u{061C}'
                    | '\u{115F}'
                    | '\u{1160}'
                    | '\u{17B4}'
                    | '\u{17B5}'
                    | '\u{180E}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'..='\u{206F}'
                    | '\u{3164}'
                    | '\u{FE00}'..='\u{FE0F}'
                    | '\u{FEFF}'
                    | '\u{FFA0}'
                    | '\u{FFF9}'..='\u{FFFB}'
                    | '\u{1D173}'..='\u{1D17A}'
                    | '\u{E0000}'..='\u{E0FFF}'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_the_documented_form_are_accepted() {
        for id in [
            "agent://acme.example/code-reviewer",
            "agent://acme.example:8443/team/ci%20bot",
            "agent://xn--bcher-kva.example/reviewer",
            "spiffe://prod.acme.example/ns/ci/sa/deployer",
            "urn:agentseal:agent:42",
            "https://agents.acme.example/reviewer?v=2",
        ] {
            assert_eq!(check_agent_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn look_alikes_invisible_characters_and_unsafe_schemes_are_refused() {
        let long = format!("agent://acme.example/{}", "x".repeat(MAX_AGENT_ID_LEN));
        for (id, expected) in [
            ("", AgentIdError::Length),
            (long.as_str(), AgentIdError::Length),
            // Cyrillic а and о in place of Latin a and o.
            ("agent://\u{430}cme.example/x", AgentIdError::NotAscii),
            ("agent://acme.example/b\u{43E}b", AgentIdError::NotAscii),
            // Zero-width space, right-to-left override, a space.
            ("agent://acme.example/a\u{200B}b", AgentIdError::NotAscii),
            (
                "agent://acme.example/\u{202E}exe.jpg",
                AgentIdError::NotAscii,
            ),
            ("agent://acme.example/a b", AgentIdError::NotAscii),
            (
                "file:///etc/passwd",
                AgentIdError::ReservedScheme("file".into()),
            ),
            ("User:bob", AgentIdError::ReservedScheme("User".into())),
            ("user:bob", AgentIdError::ReservedScheme("user".into())),
            (
                "JavaScript:alert(1)",
                AgentIdError::ReservedScheme("JavaScript".into()),
            ),
            ("Agent://acme.example/x", AgentIdError::BadScheme),
            ("no-scheme", AgentIdError::BadScheme),
            ("agent:", AgentIdError::BadScheme),
            ("1agent://acme.example/x", AgentIdError::BadScheme),
            ("agent://Acme.example/x", AgentIdError::BadHost),
            ("agent://bob@acme.example/x", AgentIdError::BadHost),
            ("agent:///x", AgentIdError::BadHost),
            ("agent://acme.example:99999x/x", AgentIdError::BadHost),
            ("agent://-acme.example/x", AgentIdError::BadHost),
            (
                "agent://acme.example/<script>",
                AgentIdError::BadCharacter('<'),
            ),
        ] {
            assert_eq!(check_agent_id(id), Err(expected), "{id:?}");
        }
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_deceptive() {
        for id in [
            "agent://acme.example/a\u{200B}b",
            "agent://acme.example/\u{202E}exe.jpg",
            "agent://acme.example/\u{2066}x",
            "agent://acme.example/a\u{FEFF}",
            "agent://acme.example/a\u{00A0}b",
            "agent://acme.example/a\nb",
            "agent://acme.example/\u{E0041}",
        ] {
            assert!(is_deceptive(id), "{id:?}");
        }
        // Other scripts are not deceptive by themselves: ids made before the rule keep working.
        assert!(!is_deceptive("agent://acme.example/b\u{43E}b"));
        assert!(!is_deceptive("agent://acme.example/code-reviewer"));
    }
}
