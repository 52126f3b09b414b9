//! Property-based fuzzing of every parser of untrusted input: JWS (compact and JSON), agent
//! certificates, action tokens, delegation grants, revocation lists, access tokens, tool
//! arguments, agent ids, audit checkpoints and records, stored Merkle tree parts, and webhook
//! settings (URL and secret). Inputs are arbitrary text and valid objects with random edits, both
//! to the whole text and to the decoded claims (re-encoded, so the claims parser runs before the
//! signature check refuses them). Nothing may panic, and every refusal carries a reason code that
//! docs/reason-codes.md documents.
//!
//! `AGENTSEAL_FUZZ_CASES` sets the cases per target (default 256, what CI runs);
//! `tools/fuzz.sh` runs 100,000 per target in a release build.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use agentseal::audit::checkpoint::Checkpoint;
use agentseal::audit::merkle::{self, Frontier};
use agentseal::audit::{self, AuditEvent, AuditVerifier, Decision, SealedRecord};
use agentseal::crypto::{Algorithm, Seed, SigningKey};
use agentseal::jose::{self, Jws, b64, b64_decode};
use agentseal::reason::VerifyError;
use agentseal::token::access::{self, AccessClaims};
use agentseal::token::action::{self, ActionRequest, Expectations};
use agentseal::token::certificate::{AgentCertificate, CertificateClaims, Confirmation};
use agentseal::token::delegation;
use agentseal::token::revocation::{CrlClaims, RevocationList};
use agentseal::token::trust::TrustAnchor;
use agentseal::verify::{PresentedCertificates, Verifier};
use proptest::prelude::*;
use serde_json::json;

const AGENT: &str = "agent://acme.example/reviewer";
const HUB: &str = "http://127.0.0.1:7777/mcp";
const ORIGIN: &str = "agentseal/fuzz/audit";

fn cases() -> u32 {
    std::env::var("AGENTSEAL_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

/// Valid objects of every kind, from a hybrid CA and a hybrid agent.
struct Fixture {
    anchor: TrustAnchor,
    certificate: String,
    token: String,
    crl: String,
    access_token: String,
    grant: String,
    checkpoint: String,
    record: SealedRecord,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = |algorithm, byte| {
            SigningKey::from_seed(algorithm, &Seed::from_slice(&[byte; 32]).unwrap())
        };
        let ca = [key(Algorithm::Ed25519, 1), key(Algorithm::MlDsa65, 2)];
        let agent = [key(Algorithm::Ed25519, 3), key(Algorithm::MlDsa65, 4)];
        let anchor = TrustAnchor {
            ca_id: "urn:agentseal:ca:fuzz".into(),
            keys: ca.iter().map(|k| k.public_key().clone()).collect(),
        };
        let now = agentseal::clock::now();
        let public: Vec<_> = agent.iter().map(|k| k.public_key().clone()).collect();
        let claims = CertificateClaims {
            iss: anchor.ca_id.clone(),
            sub: AGENT.into(),
            iat: now,
            nbf: now,
            exp: now + 86_400,
            jti: "serial-1".into(),
            cnf: Confirmation::for_keys(&public),
            meta: Default::default(),
        };
        let ca_refs: Vec<&SigningKey> = ca.iter().collect();
        let agent_refs: Vec<&SigningKey> = agent.iter().collect();
        let certificate = AgentCertificate::issue(&claims, &ca_refs).unwrap();
        let parsed = AgentCertificate::verify_signed(&certificate, &anchor).unwrap();
        let request = ActionRequest::new("deploy", "svc", json!({"repo": "web", "n": [1, 2.5]}));
        let token = action::sign(&parsed, &agent_refs, &request, now)
            .unwrap()
            .token;
        let crl = RevocationList::issue(
            &CrlClaims {
                iss: anchor.ca_id.clone(),
                number: 7,
                iat: now,
                next_update: now + 3_600,
                revoked_certificates: vec![],
                revoked_tokens: vec![],
                audit_checkpoint: None,
                ca_keys: None,
            },
            &ca_refs,
        )
        .unwrap();
        let access_token = access::issue(
            &AccessClaims {
                iss: anchor.ca_id.clone(),
                sub: AGENT.into(),
                aud: HUB.into(),
                client_id: AGENT.into(),
                iat: now,
                nbf: now,
                exp: now + 3_600,
                jti: "at-1".into(),
                scope: "agentseal:sign agentseal:verify".into(),
            },
            &ca[0],
        )
        .unwrap();
        let grant_request = delegation::GrantRequest {
            delegate: "agent://acme.example/helper".into(),
            actions: vec!["deploy".into()],
            audiences: Some(vec!["svc".into()]),
            scope: Some("repo:web".into()),
            ttl: 600,
        };
        let (grant, _) = delegation::grant(
            &parsed,
            &agent_refs,
            "user:ann@acme.example",
            None,
            &grant_request,
            now,
        )
        .unwrap();
        let mut event = AuditEvent::new(AGENT, "mcp.sign_action", Decision::Allowed);
        event.details.insert("token_id".into(), "t-1".into());
        let record = audit::seal(&event, None, now, &ca[0]).unwrap();
        let checkpoint = Checkpoint {
            origin: ORIGIN.into(),
            size: 1,
            root: merkle::root(&[record.leaf()]),
        }
        .sign(&ca_refs)
        .unwrap();
        Fixture {
            anchor,
            certificate,
            token,
            crl,
            access_token,
            grant,
            checkpoint,
            record,
        }
    })
}

/// Every reason code docs/reason-codes.md names (any backticked word there).
fn documented_codes() -> &'static BTreeSet<String> {
    static CODES: OnceLock<BTreeSet<String>> = OnceLock::new();
    CODES.get_or_init(|| {
        let text = include_str!("../../docs/reason-codes.md");
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|word| {
                !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .map(str::to_owned)
            .collect()
    })
}

fn assert_documented(result: Result<impl Sized, VerifyError>) {
    if let Err(error) = result {
        assert!(
            documented_codes().contains(error.code()),
            "undocumented reason code {:?} ({error})",
            error.code()
        );
    }
}

/// As [`assert_documented`], for parsers whose errors give their code directly.
fn assert_code_documented(result: Result<(), &'static str>) {
    if let Err(code) = result {
        assert!(
            documented_codes().contains(code),
            "undocumented reason code {code:?}"
        );
    }
}

/// An edit: at a position (taken modulo the length), replace, insert, delete or truncate.
type Edit = (usize, u8, u8);

fn edited(valid: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for &(at, byte, kind) in edits {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// `valid` with random edits to its text.
fn text_edits(valid: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&edited(valid.as_bytes(), edits)).into_owned()
}

/// `valid` (compact, or JSON with one payload) with random edits to its decoded payload, the
/// payload re-encoded: the claims parser sees malformed claims before any signature check.
fn payload_edits(valid: &str, edits: &[Edit]) -> String {
    if let Some(rest) = valid.strip_prefix('{') {
        let mut object: serde_json::Value = serde_json::from_str(&format!("{{{rest}")).unwrap();
        let payload = b64_decode(object["payload"].as_str().unwrap()).unwrap();
        object["payload"] = b64(&edited(&payload, edits)).into();
        return object.to_string();
    }
    let parts: Vec<&str> = valid.split('.').collect();
    let payload = b64_decode(parts[1]).unwrap();
    format!(
        "{}.{}.{}",
        parts[0],
        b64(&edited(&payload, edits)),
        parts[2]
    )
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8)
}

fn verifier<'a>(
    fixture: &'a Fixture,
    presented: &'a PresentedCertificates,
    crl: &'a RevocationList,
) -> Verifier<'a> {
    Verifier {
        anchor: &fixture.anchor,
        certificates: presented,
        revocation: crl,
        skew: 60,
        cache: None,
    }
}

#[test]
fn the_fixture_is_valid_so_the_edits_start_from_accepted_objects() {
    let f = fixture();
    let crl = RevocationList::verify(&f.crl, &f.anchor, 0).unwrap();
    let presented = PresentedCertificates(vec![f.certificate.clone()]);
    let expect = Expectations {
        max_delegation_depth: None,
        audience: Some("svc".into()),
        action: Some("deploy".into()),
        args: None,
    };
    let now = agentseal::clock::now();
    verifier(f, &presented, &crl)
        .verify_token(&f.token, &expect, now)
        .unwrap();
    access::verify(&f.access_token, &f.anchor, HUB, &crl, now, 60).unwrap();
    delegation::parse_unverified(&f.grant).unwrap();
    Checkpoint::open(&f.checkpoint, ORIGIN, &f.anchor.keys).unwrap();
    AuditVerifier::new(&f.anchor.keys, None)
        .push(&f.record)
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn jws_and_json_parsers(text in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_documented(Jws::parse(&text));
        assert_documented(jose::parse_strict_json(&bytes));
        assert_documented(agentseal::verify::parse_args(&text));
        let _ = agentseal::identifier::check_agent_id(&text);
        let _ = agentseal::identifier::is_deceptive(&text);
    }

    #[test]
    fn certificates(edits in edits(), in_payload in any::<bool>()) {
        let f = fixture();
        let input = if in_payload { payload_edits(&f.certificate, &edits) } else { text_edits(&f.certificate, &edits) };
        assert_documented(AgentCertificate::verify_signed(&input, &f.anchor));
        assert_documented(AgentCertificate::parse_unverified(&input).map(drop));
    }

    #[test]
    fn action_tokens(edits in edits(), in_payload in any::<bool>()) {
        let f = fixture();
        let crl = RevocationList::verify(&f.crl, &f.anchor, 0).unwrap();
        let presented = PresentedCertificates(vec![f.certificate.clone()]);
        let input = if in_payload { payload_edits(&f.token, &edits) } else { text_edits(&f.token, &edits) };
        let expect = Expectations {
            max_delegation_depth: Some(4),
            audience: Some("svc".into()),
            action: Some("deploy".into()),
            args: Some(json!({"repo": "web", "n": [1, 2.5]})),
        };
        let now = agentseal::clock::now();
        assert_documented(verifier(f, &presented, &crl).verify_token(&input, &expect, now));
        assert_documented(action::parse_unverified(&input).map(drop));
    }

    #[test]
    fn grants_revocation_lists_and_access_tokens(edits in edits(), in_payload in any::<bool>()) {
        let f = fixture();
        let edit = |valid: &str| if in_payload { payload_edits(valid, &edits) } else { text_edits(valid, &edits) };
        assert_documented(delegation::parse_unverified(&edit(&f.grant)).map(drop));
        assert_documented(RevocationList::verify(&edit(&f.crl), &f.anchor, 0).map(drop));
        let crl = RevocationList::verify(&f.crl, &f.anchor, 0).unwrap();
        let now = agentseal::clock::now();
        assert_documented(access::verify(&edit(&f.access_token), &f.anchor, HUB, &crl, now, 60));
    }

    #[test]
    fn checkpoints_audit_records_tree_parts_and_webhook_settings(
        edits in edits(),
        text in any::<String>(),
        size in any::<u64>(),
        parts in prop::collection::vec(any::<[u8; 32]>(), 0..70),
        split in any::<usize>(),
    ) {
        let f = fixture();
        let note = text_edits(&f.checkpoint, &edits);
        for note in [&note, &text] {
            let opened = Checkpoint::open(note, ORIGIN, &f.anchor.keys);
            assert_code_documented(opened.map(drop).map_err(|e| e.code()));
        }
        // A stored record with an edited body, actor or signature.
        let record = SealedRecord {
            body: text_edits(&f.record.body, &edits),
            actor: text.clone(),
            sig: if text.is_empty() { f.record.sig.clone() } else { text.clone() },
            ..f.record.clone()
        };
        let mut verifier = AuditVerifier::new(&f.anchor.keys, None);
        assert_code_documented(verifier.push(&record).map_err(|e| e.code()));
        // Stored tree parts are a hint: anything at all is refused or proves the head.
        let split = split % (parts.len() + 1);
        let head = merkle::root(&[f.record.leaf()]);
        let resumed = Frontier::resume(size, &head, &f.record.leaf(), parts[..split].to_vec(), parts[split..].to_vec());
        prop_assert!(resumed.is_none_or(|tree| tree.root() == head));
        assert_code_documented(agentseal::signals::check_url(&text).map(drop).map_err(|e| e.code()));
        assert_code_documented(agentseal::signals::WebhookSecret::parse(&text).map(drop).map_err(|e| e.code()));
    }
}
