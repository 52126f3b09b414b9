//! Offline verification of action tokens and certificates: what a peer or a service that only
//! verifies needs, given the CA's public keys, a way to find certificates, and revocation data.
//!
//! Checks run in a fixed order (RFC 8725): size and syntax, `typ`, the signer's certificate (to
//! learn its keys), `alg` allow-list and signatures, `iss`, `aud`, `exp`, `nbf`, the certificate's
//! own CA signature, lifetime and revocation, the token's revocation, then the action and argument
//! binding. The first failure is reported with its stable reason code.

mod cache;
#[cfg(feature = "remote")]
pub mod remote;

pub use cache::{
    AccessTokenCache, CertificateCache, DEFAULT_CAPACITY as DEFAULT_CACHE_CAPACITY, SignatureCache,
    Verified,
};

use serde_json::Value;

use crate::jose::{self, Jws};
use crate::reason::VerifyError;
use crate::token::action::{self, ActionClaims, Expectations, TOKEN_TYP};
use crate::token::certificate::AgentCertificate;
use crate::token::delegation::{self, GrantClaims};
use crate::token::revocation::RevocationList;
use crate::token::trust::RevocationSource;
use crate::token::trust::TrustAnchor;

/// Another CA that verifications also trust: a hub's, with its latest revocation list.
#[derive(Debug, Clone, Copy)]
pub struct ExternalTrust<'a> {
    /// The other CA.
    pub anchor: &'a TrustAnchor,
    /// Its revocation list; lookups fail closed once it is stale.
    pub revocation: &'a RevocationList,
}

/// Finds an agent certificate by serial.
pub trait CertificateResolver {
    /// The encoded certificate with serial `serial`, if known.
    fn certificate(&self, serial: &str) -> Option<String>;
}

/// A resolver that knows exactly the certificates it was given (what a peer was presented).
#[derive(Debug, Clone, Default)]
pub struct PresentedCertificates(pub Vec<String>);

impl CertificateResolver for PresentedCertificates {
    fn certificate(&self, serial: &str) -> Option<String> {
        self.0.iter().find_map(|encoded| {
            let (_, claims, _) = AgentCertificate::parse_unverified(encoded).ok()?;
            (claims.jti == serial).then(|| encoded.clone())
        })
    }
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedAction {
    /// The token's claims.
    pub claims: ActionClaims,
    /// The signer's verified certificate.
    pub certificate: AgentCertificate,
    /// The delegation chain, when the signer acts for another.
    pub delegation: Option<VerifiedChain>,
}

/// Verifies tokens and certificates against one CA.
pub struct Verifier<'a> {
    /// The trusted CA.
    pub anchor: &'a TrustAnchor,
    /// Where certificates named by tokens are found.
    pub certificates: &'a dyn CertificateResolver,
    /// Revocation data.
    pub revocation: &'a dyn RevocationSource,
    /// Allowed clock skew in seconds.
    pub skew: i64,
    /// Certificates already verified against `anchor`, if the caller keeps them (a server does;
    /// a one-off check need not). Lifetime and revocation are checked at every use either way.
    pub cache: Option<&'a CertificateCache>,
}

impl Verifier<'_> {
    /// Verifies a certificate (see [`AgentCertificate::verify`]).
    pub fn verify_certificate(
        &self,
        encoded: &str,
        now: i64,
    ) -> Result<AgentCertificate, VerifyError> {
        match self.cache {
            Some(cache) => cache.verify(encoded, self.anchor, self.revocation, now, self.skew),
            None => AgentCertificate::verify(encoded, self.anchor, self.revocation, now, self.skew),
        }
    }

    /// Verifies a presented certificate and its proof of possession over `challenge` (which the
    /// verifier issued) for `audience` (the verifier itself).
    pub fn verify_presentation(
        &self,
        certificate: &str,
        proof: &str,
        challenge: &str,
        audience: &str,
        now: i64,
    ) -> Result<(AgentCertificate, crate::token::presentation::ProofClaims), VerifyError> {
        let certificate = self.verify_certificate(certificate, now)?;
        let claims = crate::token::presentation::verify_proof(
            proof,
            &certificate,
            challenge,
            audience,
            now,
            self.skew,
        )?;
        Ok((certificate, claims))
    }

    /// Verifies an action token and what it is bound to.
    pub fn verify_token(
        &self,
        token: &str,
        expect: &Expectations,
        now: i64,
    ) -> Result<VerifiedAction, VerifyError> {
        let jws = Jws::parse(token)?;
        jws.check_typ(TOKEN_TYP)?;
        let claims: ActionClaims = jose::parse_strict_object(&jws.payload, "token claims")?;
        let encoded_cert = self
            .certificates
            .certificate(&claims.cert)
            .ok_or_else(|| VerifyError::UnknownCertificate(claims.cert.clone()))?;
        let (_, cert_claims, agent_keys) = AgentCertificate::parse_unverified(&encoded_cert)?;
        if cert_claims.jti != claims.cert {
            return Err(VerifyError::UnknownCertificate(claims.cert.clone()));
        }
        jws.verify(&agent_keys)?;
        // A token speaks for its signer, unless a delegation chain says for whom (checked below).
        let delegated = claims.act.is_some() || claims.dlg.is_some();
        if claims.iss != cert_claims.sub || (!delegated && claims.sub != cert_claims.sub) {
            return Err(VerifyError::SubjectMismatch {
                token: claims.iss.clone(),
                certificate: cert_claims.sub.clone(),
            });
        }
        if let Some(audience) = &expect.audience
            && &claims.aud != audience
        {
            return Err(VerifyError::WrongAudience {
                expected: audience.clone(),
                found: claims.aud.clone(),
            });
        }
        if claims.exp < claims.nbf || claims.exp.saturating_sub(claims.iat) > action::MAX_TTL {
            return Err(VerifyError::malformed(format!(
                "token lifetime is not between nbf and iat + {} s",
                action::MAX_TTL
            )));
        }
        if now > claims.exp.saturating_add(self.skew) {
            return Err(VerifyError::Expired(claims.exp));
        }
        if now.saturating_add(self.skew) < claims.nbf.max(claims.iat) {
            return Err(VerifyError::NotYetValid(claims.nbf));
        }
        let certificate = self.verify_certificate(&encoded_cert, now)?;
        if let Some(entry) = self.revocation.token_revocation(&claims.jti, now)? {
            return Err(VerifyError::Revoked {
                jti: claims.jti.clone(),
                reason: entry.reason,
            });
        }
        let delegation = if delegated {
            let max_depth = expect
                .max_delegation_depth
                .unwrap_or(delegation::DEFAULT_MAX_DEPTH);
            Some(self.verify_chain(&claims, max_depth, now)?)
        } else {
            None
        };
        if let Some(action) = &expect.action
            && &claims.action != action
        {
            return Err(VerifyError::WrongAction {
                expected: action.clone(),
                found: claims.action.clone(),
            });
        }
        if let Some(args) = &expect.args {
            action::check_args(args).map_err(|e| VerifyError::Malformed(e.to_string()))?;
            if action::args_sha256(args) != claims.args_sha256 {
                return Err(VerifyError::ArgsMismatch);
            }
        }
        Ok(VerifiedAction {
            claims,
            certificate,
            delegation,
        })
    }

    /// Verifies the delegation chain of a signed, current token: see [`crate::token::delegation`].
    fn verify_chain(
        &self,
        claims: &ActionClaims,
        max_depth: usize,
        now: i64,
    ) -> Result<VerifiedChain, VerifyError> {
        let act = claims
            .act
            .as_ref()
            .ok_or_else(|| VerifyError::DelegationBroken("grants without an act claim".into()))?;
        let actors = delegation::actors_of(act)?;
        if actors[0] != claims.iss {
            return Err(VerifyError::DelegationBroken(format!(
                "act names {} as the current actor, but {} signed the token",
                actors[0], claims.iss
            )));
        }
        if actors.len() > max_depth {
            return Err(VerifyError::DelegationTooDeep {
                depth: actors.len(),
                max: max_depth,
            });
        }
        // Every party, principal first, signer last.
        let parties: Vec<&str> = std::iter::once(claims.sub.as_str())
            .chain(actors.iter().rev().map(String::as_str))
            .collect();
        for (i, party) in parties.iter().enumerate() {
            if parties[..i].contains(party) {
                return Err(VerifyError::DelegationCycle((*party).to_owned()));
            }
        }
        let encoded = claims.dlg.as_deref().unwrap_or_default();
        let grants = encoded
            .iter()
            .map(|g| delegation::parse_unverified(g))
            .collect::<Result<Vec<_>, _>>()?;
        // A principal that signed the first grant is verified; otherwise the first agent asserts
        // it, and the grants start at that agent.
        let principal_verified = grants.first().is_some_and(|(_, g)| g.iss == claims.sub);
        if !principal_verified && !delegation::is_user_principal(&claims.sub) {
            return Err(VerifyError::DelegationBroken(format!(
                "{} did not grant this chain, and only `user:` principals may be named without a grant",
                claims.sub
            )));
        }
        let first = usize::from(!principal_verified);
        if grants.len() + first + 1 != parties.len() {
            return Err(VerifyError::DelegationBroken(format!(
                "{} grants for a chain of {} parties",
                grants.len(),
                parties.len()
            )));
        }
        let mut previous: Option<&GrantClaims> = None;
        for (index, (jws, grant)) in grants.iter().enumerate() {
            let link = (parties[first + index], parties[first + index + 1]);
            self.verify_grant(index, jws, grant, link, &claims.sub, previous, now)?;
            previous = Some(grant);
        }
        if let Some(last) = previous {
            within_grant(claims, last, grants.len() - 1)?;
        }
        Ok(VerifiedChain {
            principal: claims.sub.clone(),
            principal_verified,
            actors: parties[1..].iter().map(|p| (*p).to_owned()).collect(),
            grants: grants.into_iter().map(|(_, g)| g).collect(),
        })
    }

    /// Checks grant `index` of a chain, linking `link.0` (delegator) to `link.1` (delegate) for
    /// `principal`, under `previous`: its place, its signature by the delegator's certified keys,
    /// its lifetime, revocation, and that it narrows its parent.
    #[allow(clippy::too_many_arguments)]
    fn verify_grant(
        &self,
        index: usize,
        jws: &Jws,
        grant: &GrantClaims,
        link: (&str, &str),
        principal: &str,
        previous: Option<&GrantClaims>,
        now: i64,
    ) -> Result<(), VerifyError> {
        let (delegator, delegate) = link;
        if grant.iss != delegator || grant.sub != delegate {
            return Err(VerifyError::DelegationBroken(format!(
                "grant {index} is from {} to {}, the chain needs {delegator} to {delegate}",
                grant.iss, grant.sub
            )));
        }
        if grant.principal != principal {
            return Err(VerifyError::DelegationBroken(format!(
                "grant {index} acts for {}, the token for {}",
                grant.principal, principal
            )));
        }
        if grant.parent.as_deref() != previous.map(|p| p.jti.as_str()) {
            return Err(VerifyError::DelegationBroken(format!(
                "grant {index} does not name the grant before it as its parent"
            )));
        }
        // Signed by the delegator's certified keys: the certificate must be for the
        // delegator, and its keys must verify the grant.
        let encoded_cert = self
            .certificates
            .certificate(&grant.cert)
            .ok_or_else(|| VerifyError::UnknownCertificate(grant.cert.clone()))?;
        let (_, cert_claims, keys) = AgentCertificate::parse_unverified(&encoded_cert)?;
        if cert_claims.jti != grant.cert
            || cert_claims.sub != grant.iss
            || jws.verify(&keys).is_err()
        {
            return Err(VerifyError::DelegationBadSignature { index });
        }
        if grant.exp < grant.nbf
            || grant.exp.saturating_sub(grant.iat.min(grant.nbf)) > delegation::MAX_GRANT_TTL
        {
            return Err(VerifyError::malformed(format!(
                "grant {index} lifetime is not between nbf and iat + {} s",
                delegation::MAX_GRANT_TTL
            )));
        }
        if now > grant.exp.saturating_add(self.skew)
            || now.saturating_add(self.skew) < grant.nbf.max(grant.iat)
        {
            return Err(VerifyError::DelegationExpired { index });
        }
        match self.verify_certificate(&encoded_cert, now) {
            Err(VerifyError::CertificateRevoked { serial, reason }) => {
                return Err(VerifyError::DelegationRevoked {
                    index,
                    detail: format!("the delegator's certificate {serial} ({reason})"),
                });
            }
            other => other?,
        };
        if let Some(entry) = self.revocation.token_revocation(&grant.jti, now)? {
            return Err(VerifyError::DelegationRevoked {
                index,
                detail: format!("grant {} ({})", grant.jti, entry.reason),
            });
        }
        if let Some(parent) = previous {
            if grant.exp > parent.exp || grant.nbf < parent.nbf {
                return Err(VerifyError::DelegationOutlivesParent { index: index - 1 });
            }
            delegation::narrows(parent, grant).map_err(VerifyError::ScopeEscalation)?;
        }
        Ok(())
    }
}

/// A delegation chain that passed every check.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VerifiedChain {
    /// For whom the chain acts (the token's `sub`).
    pub principal: String,
    /// Whether the principal itself signed the first grant; if not, it is a party outside the
    /// CA (such as a user) that the first agent names, and only that agent vouches for it.
    pub principal_verified: bool,
    /// The agents acting, principal side first, the token's signer last.
    pub actors: Vec<String>,
    /// The verified grants, root first.
    pub grants: Vec<GrantClaims>,
}

/// Convenience for callers holding arguments as JSON text.
pub fn parse_args(text: &str) -> Result<Value, VerifyError> {
    jose::parse_strict_json(text.as_bytes())
}

/// Checks that a token stays within the last grant of its chain (grant `index`): its expiry,
/// action, audience and scope.
fn within_grant(
    claims: &ActionClaims,
    last: &GrantClaims,
    index: usize,
) -> Result<(), VerifyError> {
    if claims.exp > last.exp {
        return Err(VerifyError::DelegationOutlivesParent { index });
    }
    if !delegation::action_allowed(last, &claims.action) {
        return Err(VerifyError::ScopeEscalation(format!(
            "action {:?} is not granted to {}",
            claims.action, claims.iss
        )));
    }
    if !delegation::audience_allowed(last, &claims.aud) {
        return Err(VerifyError::ScopeEscalation(format!(
            "audience {:?} is not granted to {}",
            claims.aud, claims.iss
        )));
    }
    delegation::scope_within(last.scope.as_deref(), claims.scope.as_deref()).map_err(|extra| {
        VerifyError::ScopeEscalation(format!("scope {extra:?} is not granted to {}", claims.iss))
    })?;
    Ok(())
}
