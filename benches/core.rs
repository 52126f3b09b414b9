//! Criterion benchmarks of the core: raw sign/verify per algorithm, action token issue and
//! verify per key choice, revocation lookups with 1,000 and 1,000,000 revoked entries (in the
//! SQLite store and in a verified revocation list), and on Linux the whole core operation an MCP
//! `sign_action` or `verify_peer` call makes (policy, keys, certificate, revocation, the audit
//! record), without the transport: the figure to set beside `tools/stdio_bench`'s server CPU
//! per call. Figures are recorded in docs/benchmarks.md.

use std::hint::black_box;

use agentseal::crypto::{Algorithm, Seed, SigningKey};
use agentseal::store::Store;
use agentseal::token::action::{self, ActionRequest, Expectations};
use agentseal::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
use agentseal::token::revocation::{CrlClaims, RevocationList};
use agentseal::token::trust::TrustAnchor;
use agentseal::token::trust::{RevocationEntry, RevocationSource, RevokedKind};
use agentseal::verify::{PresentedCertificates, Verifier};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;

fn key(algorithm: Algorithm, byte: u8) -> SigningKey {
    SigningKey::from_seed(algorithm, &Seed::from_slice(&[byte; 32]).unwrap())
}

fn raw_signatures(c: &mut Criterion) {
    let message = [7u8; 256];
    let mut group = c.benchmark_group("raw");
    for algorithm in Algorithm::ALL {
        let key = key(algorithm, 1);
        let signature = key.sign(&message).unwrap();
        group.bench_function(BenchmarkId::new("sign", algorithm), |b| {
            b.iter(|| key.sign(black_box(&message)).unwrap())
        });
        group.bench_function(BenchmarkId::new("verify", algorithm), |b| {
            b.iter(|| assert!(key.public_key().verify(black_box(&message), &signature)))
        });
    }
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let ca: Vec<SigningKey> = Algorithm::ALL.iter().map(|&a| key(a, 1)).collect();
    let anchor = TrustAnchor {
        ca_id: "urn:agentseal:ca:bench".into(),
        keys: ca.iter().map(|k| k.public_key().clone()).collect(),
    };
    let crl = RevocationList::from_claims(
        CrlClaims {
            iss: anchor.ca_id.clone(),
            number: 1,
            iat: 0,
            next_update: i64::MAX / 2,
            revoked_certificates: vec![],
            revoked_tokens: vec![],
            audit_checkpoint: None,
            ca_keys: None,
        },
        0,
    );
    let mut group = c.benchmark_group("token");
    for (name, algorithms) in [
        ("ed25519", vec![Algorithm::Ed25519]),
        ("ml-dsa-65", vec![Algorithm::MlDsa65]),
        ("hybrid", Algorithm::ALL.to_vec()),
    ] {
        let agent: Vec<SigningKey> = algorithms.iter().map(|&a| key(a, 2)).collect();
        let public: Vec<_> = agent.iter().map(|k| k.public_key().clone()).collect();
        let now = agentseal::clock::now();
        let claims = CertificateClaims {
            iss: anchor.ca_id.clone(),
            sub: "agent://bench".into(),
            iat: now,
            nbf: now,
            exp: now + 86_400,
            jti: "serial".into(),
            cnf: Confirmation::for_keys(&public),
            meta: Default::default(),
        };
        let encoded = AgentCertificate::issue(&claims, &ca.iter().collect::<Vec<_>>()).unwrap();
        let certificate = AgentCertificate {
            claims,
            keys: public,
            encoded: encoded.clone(),
        };
        let presented = PresentedCertificates(vec![encoded]);
        let verifier = Verifier {
            anchor: &anchor,
            certificates: &presented,
            revocation: &crl,
            skew: 60,
            cache: None,
        };
        let request = ActionRequest::new("deploy", "svc", json!({"repo": "web", "ref": "main"}));
        let refs: Vec<&SigningKey> = agent.iter().collect();
        group.bench_function(BenchmarkId::new("issue", name), |b| {
            b.iter(|| action::sign(&certificate, &refs, &request, now).unwrap())
        });
        let signed = action::sign(&certificate, &refs, &request, now).unwrap();
        let expect = Expectations {
            max_delegation_depth: None,
            audience: Some("svc".into()),
            action: Some("deploy".into()),
            args: Some(request.args.clone()),
        };
        group.bench_function(BenchmarkId::new("verify", name), |b| {
            b.iter(|| {
                verifier
                    .verify_token(black_box(&signed.token), &expect, now)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn revocation_lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("revocation_lookup");
    let tmp = tempfile::tempdir().unwrap();
    for count in [1_000usize, 1_000_000] {
        let entries: Vec<RevocationEntry> = (0..count)
            .map(|i| RevocationEntry {
                id: format!("jti-{i:08}"),
                revoked_at: 1_700_000_000,
                reason: "bench".into(),
            })
            .collect();
        let store = Store::open(&tmp.path().join(format!("bench-{count}.db"))).unwrap();
        store.revoke(RevokedKind::Token, &entries).unwrap();
        let probe_hit = format!("jti-{:08}", count / 2);
        group.bench_function(BenchmarkId::new("sqlite_hit", count), |b| {
            b.iter(|| {
                assert!(
                    store
                        .token_revocation(black_box(&probe_hit), 0)
                        .unwrap()
                        .is_some()
                )
            })
        });
        group.bench_function(BenchmarkId::new("sqlite_miss", count), |b| {
            b.iter(|| {
                assert!(
                    store
                        .token_revocation(black_box("absent"), 0)
                        .unwrap()
                        .is_none()
                )
            })
        });
        let crl = RevocationList::from_claims(
            CrlClaims {
                iss: "ca".into(),
                number: 1,
                iat: 0,
                next_update: i64::MAX / 2,
                revoked_certificates: vec![],
                revoked_tokens: entries,
                audit_checkpoint: None,
                ca_keys: None,
            },
            0,
        );
        group.bench_function(BenchmarkId::new("crl_hit", count), |b| {
            b.iter(|| {
                assert!(
                    crl.token_revocation(black_box(&probe_hit), 0)
                        .unwrap()
                        .is_some()
                )
            })
        });
        group.bench_function(BenchmarkId::new("crl_miss", count), |b| {
            b.iter(|| {
                assert!(
                    crl.token_revocation(black_box("absent"), 0)
                        .unwrap()
                        .is_none()
                )
            })
        });
    }
    group.finish();
}

/// The core operations behind the MCP tools, on a real installation: a SQLite file in a temporary
/// directory and keys in the kernel keyring (keyutils), destroyed at the end. Each iteration
/// appends its audit record, as the MCP front-end does before answering.
#[cfg(target_os = "linux")]
fn installation_calls(c: &mut Criterion) {
    use agentseal::authority::{Approval, InitOptions, Installation, KeyChoice, PeerEvidence};
    use agentseal::keystore::KeyStoreKind;

    let mut group = c.benchmark_group("installation");
    for (name, keys) in [
        ("ed25519", KeyChoice::Ed25519),
        ("ml-dsa-65", KeyChoice::MlDsa65),
        ("hybrid", KeyChoice::Hybrid),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let installation = Installation::init(
            &tmp.path().join("data"),
            KeyStoreKind::Keyutils,
            &InitOptions::default(),
        )
        .unwrap();
        // A policy that is evaluated but never limits, as in the harnesses (the default would
        // rate-limit the agent to 120 signatures a minute).
        let policy = tmp.path().join("bench.rego");
        std::fs::write(
            &policy,
            "package agentseal\ndefault decision := {\"allow\": true}\n",
        )
        .unwrap();
        installation.use_policy_file(&policy).unwrap();
        let agent = "agent://bench.example/caller";
        installation
            .create_agent(agent, keys, Default::default(), None)
            .unwrap();
        let args = json!({"repo": "web", "ref": "main"});
        let mut request = ActionRequest::new("deploy", agent, args.clone());
        request.ttl = 3_600;
        group.bench_function(BenchmarkId::new("sign_action", name), |b| {
            b.iter(|| {
                audited(
                    &installation,
                    agent,
                    "mcp.sign_action",
                    installation.sign_action_for(agent, &request, None, Approval::NotGiven),
                )
            })
        });
        let token = audited(
            &installation,
            agent,
            "mcp.sign_action",
            installation.sign_action_for(agent, &request, None, Approval::NotGiven),
        )
        .token;
        let evidence = PeerEvidence {
            token: Some(token),
            audience: agent.into(),
            action: Some("deploy".into()),
            args: Some(args),
            ..PeerEvidence::default()
        };
        group.bench_function(BenchmarkId::new("verify_peer", name), |b| {
            b.iter(|| {
                let verdict = audited(
                    &installation,
                    agent,
                    "mcp.verify_peer",
                    installation.verify_peer(&evidence),
                );
                assert!(verdict.valid);
            })
        });
        installation.destroy().unwrap();
    }
    group.finish();
}

/// Appends the audit record of `outcome` and releases it, as the MCP front-end does.
#[cfg(target_os = "linux")]
fn audited<T>(
    installation: &agentseal::authority::Installation,
    agent: &str,
    operation: &str,
    outcome: Result<T, agentseal::authority::ServiceError>,
) -> T {
    use agentseal::audit::{AuditEvent, Decision};
    let event = AuditEvent::new(agent, operation, Decision::Allowed);
    installation
        .release(&event, outcome)
        .map_err(|withheld| withheld.to_string())
        .unwrap()
}

#[cfg(target_os = "linux")]
criterion_group!(
    benches,
    raw_signatures,
    tokens,
    revocation_lookups,
    installation_calls
);
#[cfg(not(target_os = "linux"))]
criterion_group!(benches, raw_signatures, tokens, revocation_lookups);
criterion_main!(benches);
