//! A token request as the token endpoint receives it (RFC 6749 §4.5 extension grants): its
//! form parameters checked, whichever of the two grants carries the assertion.

use super::{
    CLIENT_ASSERTION_JWT, GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, Grant,
    GrantError, HubIdentity, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT,
};

/// A checked token request. Its `Debug` leaves the assertion out: it is a bearer credential.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The grant used.
    pub grant: Grant,
    /// The workload's JWT: `subject_token` (RFC 8693), `assertion` (RFC 7523 §2.1) or
    /// `client_assertion` (RFC 7523 §2.2).
    pub assertion: String,
    /// The `client_id` sent, if any: it must be the assertion's subject (RFC 7523 §3).
    pub client_id: Option<String>,
    /// The scopes asked for (space-separated), if any: the rule's otherwise.
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("grant", &self.grant)
            .field("assertion", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenRequest {
    /// Reads the form parameters of a token request to the hub `hub`. Parameters may not repeat
    /// (RFC 6749 §3.2); unknown ones are ignored (§3.2 too).
    pub fn from_form(pairs: &[(String, String)], hub: &HubIdentity) -> Result<Self, GrantError> {
        let one = |name: &str| -> Result<Option<&str>, GrantError> {
            let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            let first = values.next();
            if values.next().is_some() {
                return Err(GrantError::InvalidRequest(format!(
                    "parameter {name} is given more than once"
                )));
            }
            Ok(first.map(String::as_str).filter(|v| !v.is_empty()))
        };
        let required = |name: &str| -> Result<&str, GrantError> {
            one(name)?
                .ok_or_else(|| GrantError::InvalidRequest(format!("parameter {name} is missing")))
        };
        let grant = match required("grant_type")? {
            GRANT_TOKEN_EXCHANGE => Grant::TokenExchange,
            GRANT_JWT_BEARER => Grant::JwtBearer,
            GRANT_CLIENT_CREDENTIALS => Grant::ClientCredentials,
            other => {
                return Err(GrantError::UnsupportedGrantType(format!(
                    "{:?}: use {GRANT_TOKEN_EXCHANGE}, {GRANT_JWT_BEARER} or {GRANT_CLIENT_CREDENTIALS} with a client_assertion",
                    other.chars().take(128).collect::<String>()
                )));
            }
        };
        let assertion = match grant {
            Grant::TokenExchange => {
                let kind = required("subject_token_type")?;
                if kind != TOKEN_TYPE_JWT && kind != TOKEN_TYPE_ID_TOKEN {
                    return Err(GrantError::InvalidRequest(format!(
                        "subject_token_type must be {TOKEN_TYPE_JWT}"
                    )));
                }
                // The access token is a JWT: asking for either is asking for it.
                if let Some(wanted) = one("requested_token_type")?
                    && wanted != TOKEN_TYPE_ACCESS_TOKEN
                    && wanted != TOKEN_TYPE_JWT
                {
                    return Err(GrantError::InvalidRequest(format!(
                        "this hub issues only {TOKEN_TYPE_ACCESS_TOKEN}"
                    )));
                }
                if one("actor_token")?.is_some() {
                    return Err(GrantError::InvalidRequest(
                        "actor_token is not supported: delegation between agents uses grants (delegate_to)"
                            .into(),
                    ));
                }
                required("subject_token")?
            }
            Grant::JwtBearer => required("assertion")?,
            Grant::ClientCredentials => {
                if required("client_assertion_type")? != CLIENT_ASSERTION_JWT {
                    return Err(GrantError::InvalidRequest(format!(
                        "client_assertion_type must be {CLIENT_ASSERTION_JWT}"
                    )));
                }
                required("client_assertion")?
            }
        };
        // RFC 8707 resource and RFC 8693 audience, each possibly repeated: every one named
        // must be this hub.
        for name in ["resource", "audience"] {
            for target in pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v) {
                if hub.is_named_by(target) {
                    continue;
                }
                return Err(GrantError::InvalidTarget(format!(
                    "{name} {:?} is not this hub: tokens are issued for {}",
                    target.chars().take(256).collect::<String>(),
                    hub.resource()
                )));
            }
        }
        Ok(TokenRequest {
            grant,
            assertion: assertion.to_owned(),
            client_id: one("client_id")?.map(str::to_owned),
            scope: one("scope")?.map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn token_requests_are_read_strictly() {
        let hub = HubIdentity::new("http://127.0.0.1:8080");
        let exchange = form(&[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("resource", "http://127.0.0.1:8080/mcp"),
            ("client_id", "ignored"),
        ]);
        let request = TokenRequest::from_form(&exchange, &hub).unwrap();
        assert_eq!(request.grant, Grant::TokenExchange);
        assert_eq!(request.assertion, "a.b.c");
        let bearer = form(&[("grant_type", GRANT_JWT_BEARER), ("assertion", "x.y.z")]);
        assert_eq!(
            TokenRequest::from_form(&bearer, &hub).unwrap().grant,
            Grant::JwtBearer
        );
        let code = |pairs: &[(&str, &str)]| {
            TokenRequest::from_form(&form(pairs), &hub)
                .unwrap_err()
                .reason()
        };
        assert_eq!(
            code(&[("grant_type", "password")]),
            "unsupported_grant_type"
        );
        assert_eq!(code(&[("grant_type", GRANT_JWT_BEARER)]), "invalid_request");
        let client = form(&[
            ("grant_type", GRANT_CLIENT_CREDENTIALS),
            ("client_assertion_type", CLIENT_ASSERTION_JWT),
            ("client_assertion", "x.y.z"),
            ("client_id", "system:serviceaccount:prod:billing"),
        ]);
        let request = TokenRequest::from_form(&client, &hub).unwrap();
        assert_eq!(request.grant, Grant::ClientCredentials);
        assert_eq!(
            request.client_id.as_deref(),
            Some("system:serviceaccount:prod:billing")
        );
        // Client credentials without a JWT is a client secret flow this hub does not have.
        assert_eq!(
            code(&[
                ("grant_type", GRANT_CLIENT_CREDENTIALS),
                ("client_secret", "s")
            ]),
            "invalid_request"
        );
        assert_eq!(
            code(&[
                ("grant_type", GRANT_JWT_BEARER),
                ("assertion", "a"),
                ("assertion", "b")
            ]),
            "invalid_request"
        );
        assert_eq!(
            code(&[
                ("grant_type", GRANT_TOKEN_EXCHANGE),
                ("subject_token", "a.b.c"),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:saml2"
                ),
            ]),
            "invalid_request"
        );
        assert_eq!(
            code(&[
                ("grant_type", GRANT_JWT_BEARER),
                ("assertion", "a.b.c"),
                ("resource", "https://elsewhere.example/mcp"),
            ]),
            "invalid_target"
        );
    }
}
