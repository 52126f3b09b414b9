//! Proof of possession: a presented certificate proves something only with a fresh signature
//! over the verifier's challenge and identity. Each rejection test fails if its check is removed.

use crate::common::*;
use agentseal::crypto::Algorithm::{Ed25519, MlDsa65};
use agentseal::token::presentation::{self, PROOF_TYP};
use serde_json::{Value, json};

const CHALLENGE: &str = "c-9f8e7d6c5b4a39281706";
const PEER: &str = "agent://acme.example/peer";

fn prove_at(world: &World, challenge: &str, aud: &str, at: i64) -> String {
    presentation::prove(&world.certificate, &refs(&world.agent), challenge, aud, at).unwrap()
}

fn check(world: &World, proof: &str) -> &'static str {
    match world.verifier().verify_presentation(
        &world.certificate.encoded,
        proof,
        CHALLENGE,
        PEER,
        now(),
    ) {
        Ok(_) => "valid",
        Err(e) => e.code(),
    }
}

#[test]
fn a_fresh_proof_over_the_challenge_verifies_for_every_key_choice() {
    for algs in [&[Ed25519][..], &[MlDsa65], &[Ed25519, MlDsa65]] {
        let world = World::new(algs);
        assert_eq!(
            check(&world, &prove_at(&world, CHALLENGE, PEER, now())),
            "valid",
            "{algs:?}"
        );
    }
}

#[test]
fn a_proof_replayed_against_a_new_challenge_is_rejected_with_reason_wrong_challenge() {
    let world = World::new(&[Ed25519]);
    let old = prove_at(&world, "an-earlier-challenge-0001", PEER, now());
    assert_eq!(check(&world, &old), "wrong_challenge");
}

#[test]
fn a_proof_for_another_peer_is_rejected_with_reason_wrong_audience() {
    let world = World::new(&[Ed25519]);
    let proof = prove_at(&world, CHALLENGE, "agent://acme.example/other", now());
    assert_eq!(check(&world, &proof), "wrong_audience");
}

#[test]
fn an_old_proof_is_rejected_with_reason_expired() {
    let world = World::new(&[Ed25519]);
    assert_eq!(
        check(&world, &prove_at(&world, CHALLENGE, PEER, now() - 600)),
        "expired"
    );
}

#[test]
fn a_proof_from_the_future_is_rejected_with_reason_not_yet_valid() {
    let world = World::new(&[Ed25519]);
    assert_eq!(
        check(&world, &prove_at(&world, CHALLENGE, PEER, now() + 600)),
        "not_yet_valid"
    );
}

#[test]
fn a_proof_signed_without_the_certified_key_is_rejected_with_reason_bad_signature() {
    let world = World::new(&[Ed25519]);
    let thief = key(Ed25519, 77);
    let t = now();
    let claims = json!({
        "iss": AGENT, "sub": AGENT, "aud": PEER, "iat": t, "exp": t + 60,
        "nonce": CHALLENGE, "cert": world.certificate.claims.jti,
    });
    let forged = compact_with(&thief, &json!({"alg": "EdDSA", "typ": PROOF_TYP}), &claims);
    assert_eq!(check(&world, &forged), "bad_signature");
}

#[test]
fn a_hybrid_proof_with_one_signature_removed_is_rejected_with_reason_missing_signature() {
    let world = World::new(&[Ed25519, MlDsa65]);
    let mut proof: Value = serde_json::from_str(&prove_at(&world, CHALLENGE, PEER, now())).unwrap();
    proof["signatures"].as_array_mut().unwrap().remove(0);
    assert_eq!(check(&world, &proof.to_string()), "missing_signature");
}

#[test]
fn an_action_token_is_not_a_proof_and_is_rejected_with_reason_wrong_type() {
    let world = World::new(&[Ed25519]);
    assert_eq!(check(&world, &world.sign()), "wrong_type");
}

#[test]
fn a_proof_naming_another_certificate_is_rejected_with_reason_unknown_certificate() {
    let world = World::new(&[Ed25519]);
    let t = now();
    let claims = json!({
        "iss": AGENT, "sub": AGENT, "aud": PEER, "iat": t, "exp": t + 60,
        "nonce": CHALLENGE, "cert": "another-serial",
    });
    let proof = compact_with(
        &world.agent[0],
        &json!({"alg": "EdDSA", "typ": PROOF_TYP}),
        &claims,
    );
    assert_eq!(check(&world, &proof), "unknown_certificate");
}

#[test]
fn a_proof_under_a_revoked_certificate_is_rejected_with_reason_certificate_revoked() {
    let mut world = World::new(&[Ed25519]);
    let proof = prove_at(&world, CHALLENGE, PEER, now());
    let serial = world.certificate.claims.jti.clone();
    world.crl = revocations(&[&serial], &[]);
    assert_eq!(check(&world, &proof), "certificate_revoked");
}

#[test]
fn challenges_must_be_long_enough_and_printable() {
    assert!(presentation::check_challenge("short").is_err());
    assert!(presentation::check_challenge(&"x".repeat(257)).is_err());
    assert!(presentation::check_challenge("has a space in it, sixteen+").is_err());
    assert!(presentation::check_challenge(CHALLENGE).is_ok());
}
