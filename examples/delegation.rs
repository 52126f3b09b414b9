//! Delegation chains, end to end and offline: a user's planner agent delegates one action to a
//! deployer agent, which passes part of it on to a runner; a service verifies the runner's token
//! and sees the whole chain; escalations and revocations are refused with their reason codes.
//!
//! ```sh
//! cargo run --example delegation
//! ```
//! On a running installation the same flow is `agentseal delegate --from … --to …` and
//! `agentseal token sign --on-behalf-of …` (or the `delegate` tool and `sign_action`'s
//! `on_behalf_of` over MCP); see docs/delegation.md.

use agentseal::crypto::{Algorithm, Seed, SigningKey};
use agentseal::token::action::{self, ActionRequest, Expectations};
use agentseal::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
use agentseal::token::delegation::{self, Chain, GrantClaims, GrantRequest};
use agentseal::token::revocation::{CrlClaims, RevocationList};
use agentseal::token::trust::RevocationEntry;
use agentseal::token::trust::TrustAnchor;
use agentseal::verify::{PresentedCertificates, Verifier};
use serde_json::json;

const CA_ID: &str = "urn:agentseal:ca:example";
const SERVICE: &str = "https://deploy.acme.example";
const USER: &str = "user:ann@acme.example";

struct Agent {
    key: SigningKey,
    cert: AgentCertificate,
}

fn agent(ca: &SigningKey, id: &str, now: i64) -> Agent {
    let key = SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().expect("randomness"));
    let claims = CertificateClaims {
        iss: CA_ID.into(),
        sub: id.into(),
        iat: now,
        nbf: now,
        exp: now + 86_400,
        jti: format!("serial-of-{id}"),
        cnf: Confirmation::for_keys(&[key.public_key().clone()]),
        meta: Default::default(),
    };
    let encoded = AgentCertificate::issue(&claims, &[ca]).expect("signing works");
    let keys = vec![key.public_key().clone()];
    Agent {
        key,
        cert: AgentCertificate {
            claims,
            keys,
            encoded,
        },
    }
}

/// `from` grants `to` the right to `actions` on SERVICE, for `ttl` seconds, acting for USER.
fn grant(
    from: &Agent,
    to: &Agent,
    parent: Option<&GrantClaims>,
    actions: &[&str],
    ttl: i64,
    now: i64,
) -> (String, GrantClaims) {
    let request = GrantRequest {
        delegate: to.cert.claims.sub.clone(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
        audiences: Some(vec![SERVICE.into()]),
        scope: None,
        ttl,
    };
    delegation::grant(&from.cert, &[&from.key], USER, parent, &request, now).expect("signing works")
}

fn crl(ca: &SigningKey, revoked_grants: &[&str], now: i64, anchor: &TrustAnchor) -> RevocationList {
    let claims = CrlClaims {
        iss: CA_ID.into(),
        number: 1,
        iat: now,
        next_update: now + 3_600,
        revoked_certificates: vec![],
        revoked_tokens: revoked_grants
            .iter()
            .map(|id| RevocationEntry {
                id: id.to_string(),
                revoked_at: now,
                reason: "work done".into(),
            })
            .collect(),
        audit_checkpoint: None,
        ca_keys: None,
    };
    let encoded = RevocationList::issue(&claims, &[ca]).expect("signing works");
    RevocationList::verify(&encoded, anchor, 300).expect("a fresh list verifies")
}

fn main() {
    let now = agentseal::clock::now();
    let ca = SigningKey::from_seed(Algorithm::Ed25519, &Seed::generate().expect("randomness"));
    let anchor = TrustAnchor {
        ca_id: CA_ID.into(),
        keys: vec![ca.public_key().clone()],
    };
    let planner = agent(&ca, "agent://acme.example/planner", now);
    let deployer = agent(&ca, "agent://acme.example/deployer", now);
    let runner = agent(&ca, "agent://acme.example/runner", now);

    // Ann's planner (acting for Ann on its word) lets the deployer deploy and roll back, for an
    // hour; the deployer passes on only `deploy`, for ten minutes, to the runner.
    let (to_deployer, first) = grant(
        &planner,
        &deployer,
        None,
        &["deploy", "rollback"],
        3_600,
        now,
    );
    let (to_runner, second) = grant(&deployer, &runner, Some(&first), &["deploy"], 600, now);
    let chain = Chain {
        principal: USER.into(),
        actors: vec![
            planner.cert.claims.sub.clone(),
            deployer.cert.claims.sub.clone(),
        ],
        grants: vec![to_deployer.clone(), to_runner],
    };
    let mut request = ActionRequest::new("deploy", SERVICE, json!({"repo": "web"}));
    request.delegation = Some(chain.clone());
    let signed = action::sign(&runner.cert, &[&runner.key], &request, now).expect("signing works");
    println!("runner's token: {} bytes", signed.token.len());

    // The service knows the CA's keys, the latest revocation list, and the agents' certificates
    // (presented with the request, or fetched from the hub's registry).
    let presented = PresentedCertificates(
        [&planner, &deployer, &runner]
            .iter()
            .map(|a| a.cert.encoded.clone())
            .collect(),
    );
    let expect = Expectations {
        audience: Some(SERVICE.into()),
        action: Some("deploy".into()),
        args: Some(json!({"repo": "web"})),
        max_delegation_depth: None,
    };
    let list = crl(&ca, &[], now, &anchor);
    let verifier = Verifier {
        anchor: &anchor,
        certificates: &presented,
        revocation: &list,
        skew: 60,
        cache: None,
    };
    let verified = verifier
        .verify_token(&signed.token, &expect, now)
        .expect("the chain verifies");
    let chain_seen = verified.delegation.expect("a delegated token");
    println!(
        "valid: {} acts for {} through {:?} (principal vouched for by the first agent: {})",
        verified.claims.iss,
        chain_seen.principal,
        chain_seen.actors,
        !chain_seen.principal_verified
    );

    // The deployer tries to give the runner `delete`, which it never had.
    let (escalated, _) = grant(&deployer, &runner, Some(&first), &["delete"], 600, now);
    let mut sneaky = request.clone();
    sneaky.action = "delete".into();
    sneaky.delegation = Some(Chain {
        grants: vec![to_deployer, escalated],
        ..chain.clone()
    });
    let token = action::sign(&runner.cert, &[&runner.key], &sneaky, now)
        .expect("signing works")
        .token;
    let delete = Expectations {
        action: Some("delete".into()),
        ..expect.clone()
    };
    let refused = verifier.verify_token(&token, &delete, now).unwrap_err();
    println!("escalation refused: {}", refused.code());
    assert_eq!(refused.code(), "scope_escalation");

    // The deployer's work is done: revoking its grant from the planner cuts off the runner too.
    let list = crl(&ca, &[&first.jti], now, &anchor);
    let verifier = Verifier {
        revocation: &list,
        ..verifier
    };
    let refused = verifier
        .verify_token(&signed.token, &expect, now)
        .unwrap_err();
    println!("after revoking the planner's grant: {}", refused.code());
    assert_eq!(refused.code(), "delegation_revoked");
    let _ = second;
}
