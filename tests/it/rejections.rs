//! One test per rejection reason. Each builds a token or certificate that is valid in every
//! respect but one, and asserts the exact reason code, so removing that check makes it fail.

use crate::common::*;
use agentseal::crypto::Algorithm::{self, Ed25519, MlDsa65};
use agentseal::reason::VerifyError;
use agentseal::token::action::Expectations;
use serde_json::{Value, json};

fn expect() -> Expectations {
    Expectations {
        max_delegation_depth: None,
        audience: Some(AUD.into()),
        action: Some("deploy".into()),
        args: Some(json!({"repo": "web"})),
    }
}

fn reason(world: &World, token: &str) -> &'static str {
    match world.verifier().verify_token(token, &expect(), now()) {
        Ok(_) => "valid",
        Err(e) => e.code(),
    }
}

fn flip_in_json_part(part: &str, marker: &str) -> String {
    let mut bytes = b64_decode(part).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let at = text.find(marker).unwrap() + marker.len();
    bytes[at] ^= 0x01;
    b64(&bytes)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

#[test]
fn valid_tokens_verify_for_every_key_choice() {
    for algs in [&[Ed25519][..], &[MlDsa65], &[Ed25519, MlDsa65]] {
        let world = World::new(algs);
        assert_eq!(reason(&world, &world.sign()), "valid", "{algs:?}");
    }
}

#[test]
fn expired_token_is_rejected_with_reason_expired() {
    let world = World::new(&[Ed25519]);
    let token = world.sign_at(now() - 1_000).token; // exp = now - 700, beyond 60 s skew
    assert_eq!(reason(&world, &token), "expired");
}

#[test]
fn token_from_the_future_is_rejected_with_reason_not_yet_valid() {
    let world = World::new(&[Ed25519]);
    let token = world.sign_at(now() + 1_000).token;
    assert_eq!(reason(&world, &token), "not_yet_valid");
}

#[test]
fn token_within_clock_skew_is_accepted() {
    let world = World::new(&[Ed25519]);
    let token = world.sign_at(now() + 30).token;
    assert_eq!(reason(&world, &token), "valid");
}

#[test]
fn token_for_another_audience_is_rejected_with_reason_wrong_audience() {
    let world = World::new(&[Ed25519]);
    let token = world.sign();
    let other = Expectations {
        audience: Some("https://other.example".into()),
        ..expect()
    };
    let err = world
        .verifier()
        .verify_token(&token, &other, now())
        .unwrap_err();
    assert_eq!(err.code(), "wrong_audience");
}

#[test]
fn flipped_bit_in_header_is_rejected_with_reason_bad_signature() {
    let world = World::new(&[Ed25519]);
    let mut p = parts(&world.sign());
    p[0] = flip_in_json_part(&p[0], "\"kid\":\"");
    assert_eq!(reason(&world, &p.join(".")), "bad_signature");
}

#[test]
fn flipped_bit_in_payload_is_rejected_with_reason_bad_signature() {
    let world = World::new(&[Ed25519]);
    let mut p = parts(&world.sign());
    p[1] = flip_in_json_part(&p[1], "\"jti\":\"");
    assert_eq!(reason(&world, &p.join(".")), "bad_signature");
}

#[test]
fn flipped_bit_in_signature_is_rejected_with_reason_bad_signature() {
    for alg in [Ed25519, MlDsa65] {
        let world = World::new(&[alg]);
        let mut p = parts(&world.sign());
        let mut sig = b64_decode(&p[2]).unwrap();
        sig[10] ^= 0x01;
        p[2] = b64(&sig);
        assert_eq!(reason(&world, &p.join(".")), "bad_signature", "{alg}");
    }
}

#[test]
fn alg_none_is_rejected_with_reason_alg_not_allowed() {
    let world = World::new(&[Ed25519]);
    let h = b64(world.header("none").to_string().as_bytes());
    let p = b64(world.claims().to_string().as_bytes());
    assert_eq!(reason(&world, &format!("{h}.{p}.")), "alg_not_allowed");
}

#[test]
fn algorithm_swapped_between_key_types_is_rejected_with_reason_alg_not_allowed() {
    // An Ed25519 agent's key signing under an ML-DSA-65 header, and the reverse.
    for (agent, claimed) in [
        (Ed25519, "ML-DSA-65"),
        (MlDsa65, "EdDSA"),
        (MlDsa65, "Ed25519"),
    ] {
        let world = World::new(&[agent]);
        let token = world.compact(&world.header(claimed), &world.claims());
        assert_eq!(
            reason(&world, &token),
            "alg_not_allowed",
            "{agent} as {claimed}"
        );
    }
}

#[test]
fn hmac_with_the_public_key_as_secret_is_rejected_with_reason_alg_not_allowed() {
    let world = World::new(&[Ed25519]);
    let h = b64(world.header("HS256").to_string().as_bytes());
    let p = b64(world.claims().to_string().as_bytes());
    assert_eq!(reason(&world, &format!("{h}.{p}.AAAA")), "alg_not_allowed");
}

#[test]
fn fully_specified_ed25519_alg_is_accepted() {
    let world = World::new(&[Ed25519]);
    let token = world.compact(&world.header("Ed25519"), &world.claims());
    assert_eq!(reason(&world, &token), "valid");
}

#[test]
fn wrong_typ_is_rejected_with_reason_wrong_type() {
    let world = World::new(&[Ed25519]);
    let token = world.compact(&json!({"alg": "EdDSA", "typ": "JWT"}), &world.claims());
    assert_eq!(reason(&world, &token), "wrong_type");
    let untyped = world.compact(&json!({"alg": "EdDSA"}), &world.claims());
    assert_eq!(reason(&world, &untyped), "wrong_type");
}

#[test]
fn certificate_presented_as_token_is_rejected_with_reason_wrong_type() {
    let world = World::new(&[Ed25519]);
    assert_eq!(reason(&world, &world.certificate.encoded), "wrong_type");
}

#[test]
fn token_presented_as_certificate_is_rejected_with_reason_wrong_type() {
    let world = World::new(&[Ed25519]);
    let err = world
        .verifier()
        .verify_certificate(&world.sign(), now())
        .unwrap_err();
    assert_eq!(err.code(), "wrong_type");
}

#[test]
fn certificate_from_another_ca_is_rejected_with_reason_unknown_issuer() {
    let world = World::new(&[Ed25519]);
    let rogue_ca = keys(&[Ed25519], 9);
    let claims = cert_claims("urn:agentseal:ca:rogue", &world.agent, now(), 3600);
    let rogue =
        agentseal::token::certificate::AgentCertificate::issue(&claims, &refs(&rogue_ca)).unwrap();
    let err = world
        .verifier()
        .verify_certificate(&rogue, now())
        .unwrap_err();
    assert_eq!(err.code(), "unknown_issuer");
}

#[test]
fn certificate_claiming_our_ca_but_signed_by_another_key_is_rejected_with_reason_bad_signature() {
    let world = World::new(&[Ed25519]);
    let rogue_ca = keys(&Algorithm::ALL, 9);
    let claims = cert_claims(CA_ID, &world.agent, now(), 3600);
    let forged =
        agentseal::token::certificate::AgentCertificate::issue(&claims, &refs(&rogue_ca)).unwrap();
    let err = world
        .verifier()
        .verify_certificate(&forged, now())
        .unwrap_err();
    assert_eq!(err.code(), "bad_signature");
}

#[test]
fn certificate_signed_by_half_of_a_hybrid_ca_is_rejected_with_reason_missing_signature() {
    let world = World::new(&[Ed25519]);
    let claims = cert_claims(CA_ID, &world.agent, now(), 3600);
    let half =
        agentseal::token::certificate::AgentCertificate::issue(&claims, &[&world.ca[0]]).unwrap();
    let err = world
        .verifier()
        .verify_certificate(&half, now())
        .unwrap_err();
    assert_eq!(err, VerifyError::MissingSignature(MlDsa65));
}

#[test]
fn token_with_expired_certificate_is_rejected_with_reason_certificate_expired() {
    let world = World::with_certificate(&[Ed25519], |mut c| {
        c.iat -= 10_000;
        c.nbf -= 10_000;
        c.exp = now() - 1_000;
        c
    });
    assert_eq!(reason(&world, &world.sign()), "certificate_expired");
}

#[test]
fn token_with_future_certificate_is_rejected_with_reason_certificate_not_yet_valid() {
    let world = World::with_certificate(&[Ed25519], |mut c| {
        c.nbf = now() + 1_000;
        c
    });
    assert_eq!(reason(&world, &world.sign()), "certificate_not_yet_valid");
}

#[test]
fn revoked_token_is_rejected_with_reason_revoked() {
    let mut world = World::new(&[Ed25519]);
    let signed = world.sign_at(now());
    world.crl = revocations(&[], &[&signed.jti]);
    assert_eq!(reason(&world, &signed.token), "revoked");
}

#[test]
fn token_under_revoked_certificate_is_rejected_with_reason_certificate_revoked() {
    let mut world = World::new(&[Ed25519]);
    let token = world.sign();
    let serial = world.certificate.claims.jti.clone();
    world.crl = revocations(&[&serial], &[]);
    assert_eq!(reason(&world, &token), "certificate_revoked");
}

#[test]
fn stale_revocation_list_fails_closed_with_reason_revocation_unavailable() {
    let mut world = World::new(&[Ed25519]);
    let token = world.sign();
    let mut claims = revocations(&[], &[]).claims;
    claims.next_update = now() - 10;
    world.crl = agentseal::token::revocation::RevocationList::from_claims(claims, 0);
    assert_eq!(reason(&world, &token), "revocation_unavailable");
}

#[test]
fn duplicate_claim_names_are_rejected_with_reason_malformed() {
    let world = World::new(&[Ed25519]);
    let claims = world.claims().to_string();
    // A second "aud" after the first: last-one-wins parsers would read another audience.
    let payload = format!(
        "{},\"aud\":\"https://evil.example\"}}",
        &claims[..claims.len() - 1]
    );
    let header = world.header("EdDSA").to_string();
    let token = compact_raw(&world.agent[0], &header, &payload);
    assert_eq!(reason(&world, &token), "malformed");
}

#[test]
fn duplicate_header_names_are_rejected_with_reason_malformed() {
    let world = World::new(&[Ed25519]);
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"{}","alg":"none"}}"#,
        agentseal::token::action::TOKEN_TYP
    );
    let token = compact_raw(&world.agent[0], &header, &world.claims().to_string());
    assert_eq!(reason(&world, &token), "malformed");
}

#[test]
fn oversized_input_is_rejected_with_reason_oversized() {
    let world = World::new(&[Ed25519]);
    let huge = format!("{}.{}.{}", "a".repeat(20_000), "b".repeat(20_000), "c");
    assert_eq!(reason(&world, &huge), "oversized");
}

#[test]
fn non_base64url_input_is_rejected_with_reason_malformed() {
    let world = World::new(&[Ed25519]);
    let token = world.sign();
    let p = parts(&token);
    let variants = [
        format!("{}.{}=.{}", p[0], p[1], p[2]),       // padding
        format!("{}./{}.{}", p[0], &p[1][1..], p[2]), // standard alphabet
        format!("{}.{}+.{}", p[0], p[1], p[2]),
        format!("{} .{}.{}", p[0], p[1], p[2]),
        format!("{}.{}.{}", p[0], p[1], "%%%"),
    ];
    for variant in variants {
        assert_eq!(reason(&world, &variant), "malformed", "{variant:.40}");
    }
}

#[test]
fn garbage_never_panics_and_is_malformed() {
    let world = World::new(&[Ed25519]);
    for garbage in [
        "",
        ".",
        "..",
        "not a token",
        "{}",
        "{\"payload\":1}",
        "\u{0}\u{1}",
        "e30.e30.e30",
    ] {
        let code = reason(&world, garbage);
        assert!(
            matches!(code, "malformed" | "wrong_type"),
            "{garbage:?} gave {code}"
        );
    }
}

#[test]
fn arguments_that_do_not_match_args_sha256_are_rejected_with_reason_args_mismatch() {
    let world = World::new(&[Ed25519]);
    let token = world.sign();
    let other = Expectations {
        args: Some(json!({"repo": "web", "force": true})),
        ..expect()
    };
    let err = world
        .verifier()
        .verify_token(&token, &other, now())
        .unwrap_err();
    assert_eq!(err.code(), "args_mismatch");
}

#[test]
fn arguments_are_compared_canonically_so_member_order_does_not_matter() {
    let world = World::new(&[Ed25519]);
    let request = agentseal::token::action::ActionRequest::new(
        "deploy",
        AUD,
        json!({"b": 1, "a": [1.0, "x"]}),
    );
    let token =
        agentseal::token::action::sign(&world.certificate, &refs(&world.agent), &request, now())
            .unwrap()
            .token;
    let same: Value = serde_json::from_str(r#"{"a":[1,"x"],"b":1}"#).unwrap();
    let expect = Expectations {
        args: Some(same),
        ..expect()
    };
    assert!(
        world
            .verifier()
            .verify_token(&token, &expect, now())
            .is_ok()
    );
}

#[test]
fn token_for_another_action_is_rejected_with_reason_wrong_action() {
    let world = World::new(&[Ed25519]);
    let other = Expectations {
        action: Some("delete".into()),
        ..expect()
    };
    let err = world
        .verifier()
        .verify_token(&world.sign(), &other, now())
        .unwrap_err();
    assert_eq!(err.code(), "wrong_action");
}

#[test]
fn token_naming_an_unknown_certificate_is_rejected_with_reason_unknown_certificate() {
    let world = World::new(&[Ed25519]);
    let mut claims = world.claims();
    claims["cert"] = json!("no-such-serial");
    let token = world.compact(&world.header("EdDSA"), &claims);
    assert_eq!(reason(&world, &token), "unknown_certificate");
}

#[test]
fn token_whose_issuer_is_not_the_certificate_subject_is_rejected_with_reason_subject_mismatch() {
    let world = World::new(&[Ed25519]);
    let mut claims = world.claims();
    claims["iss"] = json!("agent://acme.example/admin");
    claims["sub"] = json!("agent://acme.example/admin");
    let token = world.compact(&world.header("EdDSA"), &claims);
    assert_eq!(reason(&world, &token), "subject_mismatch");
}

#[test]
fn hybrid_token_with_the_ml_dsa_signature_removed_is_rejected_with_reason_missing_signature() {
    let world = World::new(&[Ed25519, MlDsa65]);
    let mut jws: Value = serde_json::from_str(&world.sign()).unwrap();
    jws["signatures"].as_array_mut().unwrap().remove(1);
    let err = world
        .verifier()
        .verify_token(&jws.to_string(), &expect(), now())
        .unwrap_err();
    assert_eq!(err, VerifyError::MissingSignature(MlDsa65));
}

#[test]
fn hybrid_token_reduced_to_compact_ed25519_is_rejected_with_reason_missing_signature() {
    let world = World::new(&[Ed25519, MlDsa65]);
    let jws: Value = serde_json::from_str(&world.sign()).unwrap();
    let ed = &jws["signatures"][0];
    let compact = format!(
        "{}.{}.{}",
        ed["protected"].as_str().unwrap(),
        jws["payload"].as_str().unwrap(),
        ed["signature"].as_str().unwrap()
    );
    let err = world
        .verifier()
        .verify_token(&compact, &expect(), now())
        .unwrap_err();
    assert_eq!(err, VerifyError::MissingSignature(MlDsa65));
}

#[test]
fn hybrid_token_with_one_bad_signature_is_rejected_with_reason_bad_signature() {
    for (index, alg) in [(0, Ed25519), (1, MlDsa65)] {
        let world = World::new(&[Ed25519, MlDsa65]);
        let mut jws: Value = serde_json::from_str(&world.sign()).unwrap();
        let sig = jws["signatures"][index]["signature"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut bytes = b64_decode(&sig).unwrap();
        bytes[5] ^= 0x80;
        jws["signatures"][index]["signature"] = json!(b64(&bytes));
        let err = world
            .verifier()
            .verify_token(&jws.to_string(), &expect(), now())
            .unwrap_err();
        assert_eq!(err, VerifyError::BadSignature(alg));
    }
}

#[test]
fn hybrid_token_with_a_duplicated_signature_is_rejected_with_reason_malformed() {
    let world = World::new(&[Ed25519, MlDsa65]);
    let mut jws: Value = serde_json::from_str(&world.sign()).unwrap();
    let first = jws["signatures"][0].clone();
    jws["signatures"][1] = first;
    let err = world
        .verifier()
        .verify_token(&jws.to_string(), &expect(), now())
        .unwrap_err();
    assert_eq!(err.code(), "malformed");
}

#[test]
fn hybrid_tokens_fit_in_an_8_kb_http_header() {
    let world = World::new(&[Ed25519, MlDsa65]);
    let token = world.sign();
    assert!(token.len() < 8 * 1024, "{} bytes", token.len());
}

#[test]
fn extreme_times_never_overflow() {
    let world = World::new(&[Ed25519]);
    for (nbf, exp) in [
        (i64::MIN, i64::MAX),
        (i64::MAX, i64::MAX),
        (i64::MIN, i64::MIN),
    ] {
        let mut claims = world.claims();
        claims["iat"] = json!(nbf);
        claims["nbf"] = json!(nbf);
        claims["exp"] = json!(exp);
        let token = world.compact(&world.header("EdDSA"), &claims);
        let code = reason(&world, &token);
        assert!(
            matches!(code, "malformed" | "expired" | "not_yet_valid"),
            "{code}"
        );
    }
}

#[test]
fn token_with_a_lifetime_beyond_one_day_is_rejected_with_reason_malformed() {
    let world = World::new(&[Ed25519]);
    let mut claims = world.claims();
    claims["exp"] = json!(now() + 2 * 86_400);
    let token = world.compact(&world.header("EdDSA"), &claims);
    assert_eq!(reason(&world, &token), "malformed");
    let mut claims = world.claims();
    claims["exp"] = json!(claims["nbf"].as_i64().unwrap() - 1);
    let token = world.compact(&world.header("EdDSA"), &claims);
    assert_eq!(reason(&world, &token), "malformed");
}

#[test]
fn expected_arguments_with_integers_beyond_2_pow_53_are_refused() {
    let world = World::new(&[Ed25519]);
    let token = world.sign();
    let other = Expectations {
        args: Some(json!({"repo": "web", "amount": 9_007_199_254_740_993u64})),
        ..expect()
    };
    let err = world
        .verifier()
        .verify_token(&token, &other, now())
        .unwrap_err();
    assert_eq!(err.code(), "malformed");
}
