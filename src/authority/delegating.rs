//! Delegation: an agent grants another the right to act for it (or for a user it acts for),
//! and the chain a delegate signs under is rebuilt from the stored grants.

use super::*;

/// A delegation grant just signed; also the result of the MCP `delegate` tool, whose output
/// schema is derived from it (the field docs are what the model reads).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct IssuedGrant {
    /// The signed grant. The delegate's server already has it; send it along only to a
    /// delegate served elsewhere.
    pub grant: String,
    /// Its id: revoke the grant (and everything under it) with `revoke` and this grant.
    pub grant_id: String,
    /// For whom the delegate may act.
    pub principal: String,
    /// The delegate.
    pub delegate: String,
    /// When it expires (capped at the delegator's own grant).
    pub expires_at: i64,
    /// Actors in the chain, the delegate included.
    pub depth: usize,
}

/// A principal or actor named in a chain: a `user:` principal, or an agent id
/// ([`check_named_agent`]).
pub(super) fn check_party(party: &str) -> Result<(), ServiceError> {
    if delegation::is_user_principal(party) || check_named_agent(party).is_ok() {
        return Ok(());
    }
    Err(ServiceError::InvalidInput(
        "on_behalf_of must be an agent id or user:<id> (printable ASCII, no spaces, at most 256 bytes)"
            .into(),
    ))
}

/// An id that names an agent that may already exist: at most 256 bytes of printable ASCII with
/// a scheme other than `user`. This is the rule agents were made under before
/// [`crate::identifier`]; new agents follow the stricter [`validate_agent_id`].
pub(super) fn check_named_agent(id: &str) -> Result<(), ServiceError> {
    let named = id.len() <= crate::identifier::MAX_AGENT_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic())
        && id.split_once(':').is_some_and(|(scheme, rest)| {
            !rest.is_empty() && !scheme.is_empty() && !scheme.eq_ignore_ascii_case("user")
        });
    if named {
        Ok(())
    } else {
        Err(ServiceError::InvalidInput(format!(
            "{id:?} is not an agent id"
        )))
    }
}

/// The claims of a grant read back from the database.
pub(super) fn grant_claims(encoded: &str) -> Result<GrantClaims, ServiceError> {
    delegation::parse_unverified(encoded)
        .map(|(_, claims)| claims)
        .map_err(|e| ServiceError::CorruptRecord(format!("stored delegation grant: {e}")))
}

impl Installation {
    /// Grants `request.delegate` the right to act for `delegator` (or, with `on_behalf_of`, for
    /// the principal `delegator` itself acts for), within what `delegator` holds. Returns the
    /// signed grant, also recorded so the delegate's `sign_action_for` finds it.
    pub fn delegate(
        &self,
        delegator: &str,
        request: &GrantRequest,
        on_behalf_of: Option<&str>,
    ) -> Result<IssuedGrant, ServiceError> {
        check_named_agent(&request.delegate)?;
        let on_behalf_of = on_behalf_of.map(delegation::normalize_principal);
        let on_behalf_of = on_behalf_of.as_deref();
        let principal = on_behalf_of.unwrap_or(delegator);
        check_party(principal)?;
        request.validate()?;
        let mut input = self.agent_policy_input(delegator, "delegate")?;
        input.action = request.actions.first().cloned();
        input.actions = request.actions.clone();
        input.ttl = Some(request.ttl);
        input.scope = request.scope.clone();
        input.delegate = Some(request.delegate.clone());
        input.on_behalf_of = on_behalf_of.map(str::to_owned);
        self.decide(&input)?;
        let now = clock::now();
        let (chain, parent) = if principal == delegator {
            (
                Chain {
                    principal: principal.to_owned(),
                    actors: Vec::new(),
                    grants: Vec::new(),
                },
                None,
            )
        } else {
            self.chain_for(delegator, principal, now)?
        };
        // Parties after this grant: principal, earlier actors, delegator, delegate.
        let parties: Vec<&str> = std::iter::once(principal)
            .chain(chain.actors.iter().map(String::as_str))
            .chain([delegator])
            .collect();
        if parties.contains(&request.delegate.as_str()) {
            return Err(ServiceError::InvalidInput(format!(
                "{} is already in this delegation chain",
                request.delegate
            )));
        }
        // Actors after this grant: the earlier ones, the delegator unless it is the principal,
        // and the delegate.
        let depth = chain.actors.len() + usize::from(principal != delegator) + 1;
        if depth > delegation::DEFAULT_MAX_DEPTH {
            return Err(ServiceError::InvalidInput(format!(
                "the chain would have {depth} actors; the limit is {}",
                delegation::DEFAULT_MAX_DEPTH
            )));
        }
        let mut request = request.clone();
        if let Some(parent) = &parent {
            request.ttl = request.ttl.min(parent.exp - now);
            if request.ttl <= 0 {
                return Err(ServiceError::NotPermitted(format!(
                    "{delegator}'s own delegation has expired"
                )));
            }
        }
        let (certificate, keys) = self.usable_signer(delegator)?;
        let refs: Vec<&SigningKey> = keys.iter().collect();
        let (encoded, claims) = delegation::grant(
            &certificate,
            &refs,
            principal,
            parent.as_ref(),
            &request,
            now,
        )?;
        if let Some(parent) = &parent {
            // What the verifier would refuse is refused here, with the same words.
            delegation::narrows(parent, &claims).map_err(ServiceError::NotPermitted)?;
        }
        self.store.insert_grant(&GrantRecord {
            jti: claims.jti.clone(),
            delegator: delegator.to_owned(),
            delegate: claims.sub.clone(),
            principal: principal.to_owned(),
            expires_at: claims.exp,
            encoded: encoded.clone(),
        })?;
        Ok(IssuedGrant {
            grant: encoded,
            grant_id: claims.jti,
            principal: principal.to_owned(),
            delegate: claims.sub,
            expires_at: claims.exp,
            depth,
        })
    }

    /// The chain that lets `agent_id` act for `principal`, and its last grant's claims: from
    /// the recorded grants; a principal that is not an agent of this installation and granted
    /// nothing is a party the agent names on its own word.
    pub(super) fn chain_for(
        &self,
        agent_id: &str,
        principal: &str,
        now: i64,
    ) -> Result<(Chain, Option<GrantClaims>), ServiceError> {
        check_party(principal)?;
        let revoked = |jti: &str| -> Result<bool, ServiceError> {
            Ok(self.store.revocation(RevokedKind::Token, jti)?.is_some())
        };
        for record in self.store.grants_for(agent_id, principal, now)? {
            if revoked(&record.jti)? {
                continue;
            }
            // Walk up to the root; a revoked or missing ancestor makes this grant useless.
            let mut grants = vec![record.encoded.clone()];
            let mut claims = vec![grant_claims(&record.encoded)?];
            let mut usable = true;
            while let Some(parent) = claims.last().and_then(|c| c.parent.clone()) {
                match self.store.grant(&parent)? {
                    Some(p) if !revoked(&p.jti)? && p.expires_at >= now => {
                        claims.push(grant_claims(&p.encoded)?);
                        grants.push(p.encoded);
                    }
                    _ => {
                        usable = false;
                        break;
                    }
                }
                if grants.len() > delegation::DEFAULT_MAX_DEPTH {
                    usable = false;
                    break;
                }
            }
            if !usable {
                continue;
            }
            grants.reverse();
            claims.reverse();
            let mut actors: Vec<String> = Vec::new();
            if claims[0].iss != principal {
                actors.push(claims[0].iss.clone());
            }
            actors.extend(claims[..claims.len() - 1].iter().map(|c| c.sub.clone()));
            let last = claims.pop();
            return Ok((
                Chain {
                    principal: principal.to_owned(),
                    actors,
                    grants,
                },
                last,
            ));
        }
        if !delegation::is_user_principal(principal) {
            return Err(ServiceError::NotPermitted(format!(
                "{principal} has not delegated to {agent_id} (or the delegation expired or was revoked): \
                 an agent must call delegate first; a person is named as user:<id>"
            )));
        }
        Ok((
            Chain {
                principal: principal.to_owned(),
                actors: Vec::new(),
                grants: Vec::new(),
            },
            None,
        ))
    }
}
