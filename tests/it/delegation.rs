//! Delegation chains, verified offline: every attack on a chain is refused with its own reason
//! code, and what a chain allows only narrows along it.

use crate::common;

use crate::common::{CA_ID, key, now, revocations};
use agentseal::crypto::{Algorithm, SigningKey};
use agentseal::token::action::{self, ActionRequest, Expectations};
use agentseal::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
use agentseal::token::delegation::{self, Chain, GrantClaims, GrantRequest};
use agentseal::token::revocation::RevocationList;
use agentseal::token::trust::TrustAnchor;
use agentseal::verify::{PresentedCertificates, VerifiedAction, Verifier};
use serde_json::{Value, json};

const AUD: &str = "https://deploy.acme.example";

struct Agent {
    id: String,
    key: SigningKey,
    cert: AgentCertificate,
}

/// A CA and agents a..g, each with a certificate.
struct Fleet {
    anchor: TrustAnchor,
    agents: Vec<Agent>,
    presented: PresentedCertificates,
    crl: RevocationList,
}

impl Fleet {
    fn new() -> Fleet {
        let ca = key(Algorithm::Ed25519, 1);
        let anchor = TrustAnchor {
            ca_id: CA_ID.into(),
            keys: vec![ca.public_key().clone()],
        };
        let agents: Vec<Agent> = "abcdefg"
            .chars()
            .enumerate()
            .map(|(i, name)| {
                let key = key(Algorithm::Ed25519, 10 + i as u8);
                let claims = CertificateClaims {
                    iss: CA_ID.into(),
                    sub: format!("agent://acme.example/{name}"),
                    iat: now(),
                    nbf: now(),
                    exp: now() + 86_400,
                    jti: format!("serial-{name}"),
                    cnf: Confirmation::for_keys(&[key.public_key().clone()]),
                    meta: Default::default(),
                };
                let encoded = AgentCertificate::issue(&claims, &[&ca]).unwrap();
                let cert = AgentCertificate {
                    keys: vec![key.public_key().clone()],
                    claims,
                    encoded,
                };
                Agent {
                    id: cert.claims.sub.clone(),
                    key,
                    cert,
                }
            })
            .collect();
        let presented =
            PresentedCertificates(agents.iter().map(|a| a.cert.encoded.clone()).collect());
        Fleet {
            anchor,
            agents,
            presented,
            crl: revocations(&[], &[]),
        }
    }

    fn agent(&self, name: char) -> &Agent {
        &self.agents[(name as u8 - b'a') as usize]
    }

    fn verify(&self, token: &str, expect: &Expectations) -> Result<VerifiedAction, String> {
        Verifier {
            anchor: &self.anchor,
            certificates: &self.presented,
            revocation: &self.crl,
            skew: 60,
            cache: None,
        }
        .verify_token(token, expect, now())
        .map_err(|e| e.code().to_owned())
    }
}

fn allow(actions: &[&str], ttl: i64) -> GrantRequest {
    GrantRequest {
        delegate: String::new(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
        audiences: None,
        scope: Some("repo:read repo:write".into()),
        ttl,
    }
}

/// A chain of grants along `path` (first = principal), each granting `request` (with each
/// hop's delegate filled in), all acting for `path[0]`.
fn chain(fleet: &Fleet, path: &str, request: &GrantRequest) -> (Chain, Vec<GrantClaims>) {
    let names: Vec<char> = path.chars().collect();
    let principal = fleet.agent(names[0]).id.clone();
    let mut grants = Vec::new();
    let mut claims: Vec<GrantClaims> = Vec::new();
    for pair in names.windows(2) {
        let from = fleet.agent(pair[0]);
        let mut hop = request.clone();
        hop.delegate = fleet.agent(pair[1]).id.clone();
        let (encoded, grant) = delegation::grant(
            &from.cert,
            &[&from.key],
            &principal,
            claims.last(),
            &hop,
            now(),
        )
        .unwrap();
        grants.push(encoded);
        claims.push(grant);
    }
    let actors = names[1..names.len() - 1]
        .iter()
        .map(|n| fleet.agent(*n).id.clone())
        .collect();
    (
        Chain {
            principal,
            actors,
            grants,
        },
        claims,
    )
}

/// The last agent of the chain signs `deploy` for AUD under `chain`.
fn sign(fleet: &Fleet, signer: char, chain: Chain, action: &str, ttl: i64) -> String {
    let agent = fleet.agent(signer);
    let mut request = ActionRequest::new(action, AUD, json!({}));
    request.ttl = ttl;
    request.scope = Some("repo:read".into());
    request.delegation = Some(chain);
    action::sign(&agent.cert, &[&agent.key], &request, now())
        .unwrap()
        .token
}

fn expect() -> Expectations {
    Expectations {
        audience: Some(AUD.into()),
        action: Some("deploy".into()),
        args: Some(json!({})),
        max_delegation_depth: None,
    }
}

#[test]
fn a_valid_chain_verifies_with_its_principal_and_actors() {
    let fleet = Fleet::new();
    let (chain, _) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    let token = sign(&fleet, 'c', chain, "deploy", 300);
    let verified = fleet.verify(&token, &expect()).unwrap();
    assert_eq!(verified.claims.sub, fleet.agent('a').id);
    assert_eq!(verified.claims.iss, fleet.agent('c').id);
    assert_eq!(
        verified.claims.act,
        Some(json!({"sub": fleet.agent('c').id, "act": {"sub": fleet.agent('b').id}}))
    );
    let chain = verified.delegation.unwrap();
    assert!(chain.principal_verified);
    assert_eq!(
        chain.actors,
        [fleet.agent('b').id.clone(), fleet.agent('c').id.clone()]
    );
    assert!(token.len() < 8 * 1024, "{} bytes", token.len());
}

#[test]
fn a_user_principal_is_carried_as_the_first_agents_word() {
    let fleet = Fleet::new();
    let b = fleet.agent('b');
    let mut request = allow(&["deploy"], 600);
    request.delegate = fleet.agent('c').id.clone();
    let (grant, _) = delegation::grant(
        &b.cert,
        &[&b.key],
        "user:ann@acme.example",
        None,
        &request,
        now(),
    )
    .unwrap();
    let chain = Chain {
        principal: "user:ann@acme.example".into(),
        actors: vec![b.id.clone()],
        grants: vec![grant],
    };
    let token = sign(&fleet, 'c', chain, "deploy", 300);
    let verified = fleet.verify(&token, &expect()).unwrap();
    let chain = verified.delegation.unwrap();
    assert_eq!(chain.principal, "user:ann@acme.example");
    assert!(!chain.principal_verified);
}

#[test]
fn scope_escalation_along_the_chain_or_in_the_token_is_refused() {
    let fleet = Fleet::new();
    // b passes on more than a gave it.
    let (mut wide, _) = chain(&fleet, "abc", &allow(&["deploy", "delete"], 600));
    let (narrow, narrow_claims) = chain(&fleet, "ab", &allow(&["deploy"], 600));
    let b = fleet.agent('b');
    let mut request = allow(&["deploy", "delete"], 600);
    request.delegate = fleet.agent('c').id.clone();
    let (escalating, _) = delegation::grant(
        &b.cert,
        &[&b.key],
        &fleet.agent('a').id,
        narrow_claims.last(),
        &request,
        now(),
    )
    .unwrap();
    wide.grants = vec![narrow.grants[0].clone(), escalating];
    let token = sign(&fleet, 'c', wide, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "scope_escalation"
    );

    // The token asks for an action, audience or scope the last grant does not give.
    let (chain_, _) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    let token = sign(&fleet, 'c', chain_.clone(), "delete", 300);
    let other_action = Expectations {
        action: Some("delete".into()),
        ..expect()
    };
    assert_eq!(
        fleet.verify(&token, &other_action).unwrap_err(),
        "scope_escalation"
    );
    let mut only_other = allow(&["deploy"], 600);
    only_other.audiences = Some(vec!["https://other.example".into()]);
    let (chain_, _) = chain(&fleet, "abc", &only_other);
    let token = sign(&fleet, 'c', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "scope_escalation"
    );
    let mut no_scope = allow(&["deploy"], 600);
    no_scope.scope = None;
    let (chain_, _) = chain(&fleet, "abc", &no_scope);
    let token = sign(&fleet, 'c', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "scope_escalation"
    );
}

#[test]
fn a_grant_or_token_outliving_its_parent_is_refused() {
    let fleet = Fleet::new();
    let (short, short_claims) = chain(&fleet, "ab", &allow(&["deploy"], 120));
    let b = fleet.agent('b');
    let mut longer = allow(&["deploy"], 3_600);
    longer.delegate = fleet.agent('c').id.clone();
    let (outliving, _) = delegation::grant(
        &b.cert,
        &[&b.key],
        &fleet.agent('a').id,
        short_claims.last(),
        &longer,
        now(),
    )
    .unwrap();
    let chain_ = Chain {
        principal: fleet.agent('a').id.clone(),
        actors: vec![b.id.clone()],
        grants: vec![short.grants[0].clone(), outliving],
    };
    let token = sign(&fleet, 'c', chain_, "deploy", 60);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_outlives_parent"
    );
    // A token that outlives the grant it is made under.
    let (chain_, _) = chain(&fleet, "ab", &allow(&["deploy"], 120));
    let token = sign(&fleet, 'b', chain_, "deploy", 600);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_outlives_parent"
    );
}

#[test]
fn a_forged_or_re_signed_link_is_refused() {
    let fleet = Fleet::new();
    let (mut chain_, claims) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    // Forged: a's grant to b, but signed with b's key (b wants to act for a).
    let b = fleet.agent('b');
    let forged = common::compact_with(
        &b.key,
        &json!({"alg": "EdDSA", "typ": delegation::GRANT_TYP}),
        &serde_json::to_value(&claims[0]).unwrap(),
    );
    chain_.grants[0] = forged;
    let token = sign(&fleet, 'c', chain_.clone(), "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_bad_signature"
    );
    // Re-signed: the same grant signed by d with its own certificate, still naming a.
    let d = fleet.agent('d');
    let mut resigned = claims[0].clone();
    resigned.cert = d.cert.claims.jti.clone();
    chain_.grants[0] = common::compact_with(
        &d.key,
        &json!({"alg": "EdDSA", "typ": delegation::GRANT_TYP}),
        &serde_json::to_value(&resigned).unwrap(),
    );
    let token = sign(&fleet, 'c', chain_.clone(), "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_bad_signature"
    );
    // Tampered: a's genuine signature over edited claims (more actions).
    let (genuine, _) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    let parts: Vec<&str> = genuine.grants[0].split('.').collect();
    let mut edited = claims[0].clone();
    edited.actions.push("delete".into());
    let payload = agentseal::jose::b64(&serde_json::to_vec(&edited).unwrap());
    let mut tampered = genuine.clone();
    tampered.grants[0] = format!("{}.{payload}.{}", parts[0], parts[2]);
    let token = sign(&fleet, 'c', tampered, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_bad_signature"
    );
}

#[test]
fn a_link_from_a_revoked_certificate_or_a_revoked_grant_revokes_what_hangs_below() {
    let mut fleet = Fleet::new();
    let (chain_, claims) = chain(&fleet, "abcd", &allow(&["deploy"], 600));
    let token = sign(&fleet, 'd', chain_, "deploy", 300);
    assert!(fleet.verify(&token, &expect()).is_ok());
    // b's certificate is revoked: c's grant from b, and d's token, fall with it.
    fleet.crl = revocations(&["serial-b"], &[]);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_revoked"
    );
    // The root grant is revoked.
    fleet.crl = revocations(&[], &[&claims[0].jti]);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_revoked"
    );
}

#[test]
fn a_chain_deeper_than_allowed_is_refused() {
    let fleet = Fleet::new();
    // a delegates down to g: six actors after the principal.
    let (chain_, _) = chain(&fleet, "abcdefg", &allow(&["deploy"], 600));
    let token = sign(&fleet, 'g', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_too_deep"
    );
    let deeper = Expectations {
        max_delegation_depth: Some(6),
        ..expect()
    };
    assert!(fleet.verify(&token, &deeper).is_ok());
    // And the limit is the verifier's to set lower.
    let (chain_, _) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    let token = sign(&fleet, 'c', chain_, "deploy", 300);
    let shallow = Expectations {
        max_delegation_depth: Some(1),
        ..expect()
    };
    assert_eq!(
        fleet.verify(&token, &shallow).unwrap_err(),
        "delegation_too_deep"
    );
}

#[test]
fn a_grant_dated_in_the_future_cannot_stretch_its_lifetime() {
    let fleet = Fleet::new();
    let (mut chain_, claims) = chain(&fleet, "ab", &allow(&["deploy"], 600));
    let a = fleet.agent('a');
    let mut stretched = claims[0].clone();
    stretched.iat = now() + 30 * 86_400;
    stretched.exp = stretched.iat;
    chain_.grants[0] = common::compact_with(
        &a.key,
        &json!({"alg": "EdDSA", "typ": delegation::GRANT_TYP}),
        &serde_json::to_value(&stretched).unwrap(),
    );
    let token = sign(&fleet, 'b', chain_, "deploy", 300);
    assert_eq!(fleet.verify(&token, &expect()).unwrap_err(), "malformed");
}

#[test]
fn a_cycle_in_the_chain_is_refused() {
    let fleet = Fleet::new();
    // a → b → a: a signs a token for itself through b.
    let (chain_, _) = chain(&fleet, "aba", &allow(&["deploy"], 600));
    let token = sign(&fleet, 'a', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_cycle"
    );
    // a → b → c → b.
    let (chain_, _) = chain(&fleet, "abcb", &allow(&["deploy"], 600));
    let token = sign(&fleet, 'b', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_cycle"
    );
}

#[test]
fn grants_from_another_chain_or_a_lying_act_claim_break_the_chain() {
    let fleet = Fleet::new();
    // c's grant is from a chain for another principal (e acting for itself through b).
    let (mut chain_, _) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    let (other, _) = chain(&fleet, "ebc", &allow(&["deploy"], 600));
    chain_.grants[1] = other.grants[1].clone();
    let token = sign(&fleet, 'c', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_broken"
    );
    // act names actors the grants do not.
    let (mut chain_, _) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    chain_.actors = vec![fleet.agent('d').id.clone()];
    let token = sign(&fleet, 'c', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_broken"
    );
    // An agent names another agent as its principal with no grant at all.
    let c = fleet.agent('c');
    let mut request = ActionRequest::new("deploy", AUD, json!({}));
    request.delegation = Some(Chain {
        principal: fleet.agent('a').id.clone(),
        actors: vec![],
        grants: vec![],
    });
    let token = action::sign(&c.cert, &[&c.key], &request, now())
        .unwrap()
        .token;
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_broken"
    );
    // A token naming another principal with no grant from it, and no act, is not delegated.
    let (mut chain_, _) = chain(&fleet, "abc", &allow(&["deploy"], 600));
    chain_.grants.clear();
    let token = sign(&fleet, 'c', chain_, "deploy", 300);
    assert_eq!(
        fleet.verify(&token, &expect()).unwrap_err(),
        "delegation_broken"
    );
}

/// Through the hub: A delegates to B with the `delegate` tool, B signs for A, C verifies the
/// chain; B cannot exceed the grant or act for an agent that granted nothing; A revoking the
/// grant cuts off B's token.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn agents_delegate_sign_and_verify_chains_through_mcp() {
    use common::hub::{Installation, call_tool, structured};
    const A: &str = "agent://acme.example/alice";
    const B: &str = "agent://acme.example/bob";
    const C: &str = "agent://acme.example/carol";
    let installation = Installation::new(&[(A, "ed25519"), (B, "ed25519"), (C, "ed25519")]);
    let hub = installation.serve(&[]);
    let [alice, bob, carol] = [A, B, C].map(|agent| installation.access_token(&hub, agent, &[]));

    let grant = structured(
        &call_tool(
            &hub,
            Some(&alice),
            "delegate",
            json!({"delegate": B, "actions": ["deploy"], "audiences": [C], "ttl_seconds": 600}),
        )
        .await,
    );
    assert_eq!(grant["principal"], A);
    assert_eq!(grant["depth"], 1);
    let signed = structured(
        &call_tool(
            &hub,
            Some(&bob),
            "sign_action",
            json!({"action": "deploy", "audience": C, "on_behalf_of": A, "ttl_seconds": 3600}),
        )
        .await,
    );
    assert!(
        signed["expires_at"].as_i64().unwrap() <= grant["expires_at"].as_i64().unwrap(),
        "the token's lifetime is capped at the grant's"
    );
    let verify = |token: Value| {
        let (hub, carol) = (&hub, &carol);
        async move {
            structured(
                &call_tool(
                    hub,
                    Some(carol),
                    "verify_peer",
                    json!({"token": token, "expected_action": "deploy"}),
                )
                .await,
            )
        }
    };
    let verdict = verify(signed["token"].clone()).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["agent_id"], B);
    assert_eq!(verdict["token"]["sub"], A);
    assert_eq!(verdict["delegation"]["actors"], json!([B]));
    assert_eq!(verdict["delegation"]["principal_verified"], true);

    // Beyond the grant, or for an agent that granted nothing: refused before signing.
    for (arguments, needle) in [
        (
            json!({"action": "delete", "audience": C, "on_behalf_of": A}),
            "not delegated",
        ),
        (
            json!({"action": "deploy", "audience": A, "on_behalf_of": A}),
            "not delegated",
        ),
        (
            json!({"action": "deploy", "audience": A, "on_behalf_of": C}),
            "has not delegated",
        ),
        // A look-alike of an agent id is neither an agent nor a user: refused.
        (
            json!({"action": "deploy", "audience": C, "on_behalf_of": format!("{A}\u{200b}")}),
            "user:<id>",
        ),
        (
            json!({"action": "deploy", "audience": C, "on_behalf_of": "agent://acme.example/nobody"}),
            "has not delegated",
        ),
    ] {
        let answer = call_tool(&hub, Some(&bob), "sign_action", arguments).await;
        let message = answer.message();
        assert_eq!(message["error"]["code"], -32602, "{message}");
        assert!(
            message["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{message}"
        );
    }

    // A revokes its grant: B's token stops verifying.
    let revoked = structured(
        &call_tool(
            &hub,
            Some(&alice),
            "revoke",
            json!({"token": grant["grant"], "reason": "work done"}),
        )
        .await,
    );
    assert_eq!(revoked["ids"], json!([grant["grant_id"]]));
    let verdict = verify(signed["token"].clone()).await;
    assert_eq!(
        verdict["reasons"],
        json!(["delegation_revoked"]),
        "{verdict}"
    );

    // The operator's CLI does the same: delegate, then sign for the principal.
    installation.cli(&["delegate", "--from", A, "--to", B, "--action", "deploy"]);
    let token = installation.cli(&[
        "token",
        "sign",
        "--agent",
        B,
        "--action",
        "deploy",
        "--aud",
        C,
        "--on-behalf-of",
        A,
    ]);
    let verified: Value =
        serde_json::from_str(&installation.cli(&["verify", &token, "--aud", C])).unwrap();
    assert_eq!(verified["claims"]["act"], json!({"sub": B}), "{verified}");
}
