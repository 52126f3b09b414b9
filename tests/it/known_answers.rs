//! Known-answer tests: the RFC 8037 Ed25519 JWS example, the RFC 9964 ML-DSA-65 example, and
//! the Wycheproof verification vectors for both algorithms. The ML-DSA-65 vectors run against
//! every backend in the build (`crypto::ml_dsa::Backend::AVAILABLE`: `fips204`, and `aws-lc-rs`
//! with the default features), and the default one through the public key types.

use agentseal::crypto::ml_dsa::Backend;
use agentseal::crypto::{Algorithm, CryptoError, PublicKey, Seed, SigningKey};
use agentseal::jose::{self, Jwk, Jws};

/// RFC 8037 Appendix A.1–A.4.
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

#[test]
fn rfc8037_ed25519_key_derives_its_public_key_and_thumbprint() {
    let seed = Seed::from_slice(&jose::b64_decode(RFC8037_D).unwrap()).unwrap();
    let key = SigningKey::from_seed(Algorithm::Ed25519, &seed);
    assert_eq!(jose::b64(&key.public_key().to_bytes()), RFC8037_X);
    assert_eq!(jose::thumbprint(key.public_key()), RFC8037_KID);
}

#[test]
fn rfc8037_ed25519_jws_example_signs_and_verifies_byte_for_byte() {
    let seed = Seed::from_slice(&jose::b64_decode(RFC8037_D).unwrap()).unwrap();
    let key = SigningKey::from_seed(Algorithm::Ed25519, &seed);
    let (input, signature) = RFC8037_JWS.rsplit_once('.').unwrap();
    assert_eq!(jose::b64(&key.sign(input.as_bytes()).unwrap()), signature);
    let jws = Jws::parse(RFC8037_JWS).unwrap();
    assert_eq!(jws.payload, b"Example of Ed25519 signing");
    jws.verify(&[key.public_key().clone()]).unwrap();
}

fn rfc9964() -> serde_json::Value {
    serde_json::from_str(include_str!("vectors/rfc9964_ml_dsa_65.json")).unwrap()
}

#[test]
fn rfc9964_all_zero_seed_gives_the_example_public_key_and_kid() {
    let v = rfc9964();
    let key = SigningKey::from_seed(Algorithm::MlDsa65, &Seed::from_slice(&[0u8; 32]).unwrap());
    assert_eq!(
        jose::b64(&key.public_key().to_bytes()),
        v["pub"].as_str().unwrap()
    );
    assert_eq!(
        jose::thumbprint(key.public_key()),
        v["kid"].as_str().unwrap()
    );
    let jwk = Jwk::from_public_key(key.public_key());
    assert_eq!(
        (jwk.kty.as_str(), jwk.alg.as_deref()),
        ("AKP", Some("ML-DSA-65"))
    );
    for backend in Backend::AVAILABLE {
        let pair = backend.key_pair(&[0u8; 32]).unwrap();
        assert_eq!(
            jose::b64(pair.public_key()),
            v["pub"].as_str().unwrap(),
            "{backend:?}"
        );
    }
}

#[test]
fn rfc9964_example_jws_verifies_and_a_tampered_copy_does_not() {
    let v = rfc9964();
    let public = Jwk {
        kty: "AKP".into(),
        crv: None,
        x: None,
        alg: Some("ML-DSA-65".into()),
        public: Some(v["pub"].as_str().unwrap().into()),
        kid: None,
        use_: None,
    }
    .to_public_key()
    .unwrap();
    let jws = Jws::parse(v["jws"].as_str().unwrap()).unwrap();
    jws.verify(std::slice::from_ref(&public)).unwrap();
    let mut tampered = jws.clone();
    tampered.signatures[0].signature[100] ^= 1;
    assert_eq!(
        tampered
            .verify(std::slice::from_ref(&public))
            .unwrap_err()
            .code(),
        "bad_signature"
    );
    // The same check through each backend directly.
    let compact = v["jws"].as_str().unwrap();
    let (input, signature) = compact.rsplit_once('.').unwrap();
    let signature = jose::b64_decode(signature).unwrap();
    let key: [u8; 1952] = public.to_bytes().try_into().unwrap();
    for backend in Backend::AVAILABLE {
        assert!(
            backend.verify(&key, input.as_bytes(), &signature),
            "{backend:?}"
        );
        let mut bad = signature.clone();
        bad[100] ^= 1;
        assert!(!backend.verify(&key, input.as_bytes(), &bad), "{backend:?}");
    }
}

#[test]
fn ml_dsa_65_signatures_of_each_backend_verify_under_every_backend() {
    // The default build (the one CI tests) has both backends.
    let expected = if cfg!(feature = "aws-lc") { 2 } else { 1 };
    assert_eq!(Backend::AVAILABLE.len(), expected);
    let seed = Seed::from_slice(&[0x5a; 32]).unwrap();
    for signer in Backend::AVAILABLE {
        let key = signer.key_pair(seed.expose()).unwrap();
        // The public key types (default backend) agree with every backend's key.
        let default = SigningKey::from_seed(Algorithm::MlDsa65, &seed);
        assert_eq!(
            default.public_key().to_bytes(),
            key.public_key().to_vec(),
            "{signer:?}"
        );
        let signature = key.sign(b"a JWS signing input").unwrap();
        assert!(
            default
                .public_key()
                .verify(b"a JWS signing input", &signature),
            "{signer:?} -> default"
        );
        for verifier in Backend::AVAILABLE {
            assert!(
                verifier.verify(key.public_key(), b"a JWS signing input", &signature),
                "{signer:?} -> {verifier:?}"
            );
            assert!(
                !verifier.verify(key.public_key(), b"another input", &signature),
                "{signer:?} -> {verifier:?} accepted another message"
            );
        }
    }
}

#[test]
fn wycheproof_ed25519_vectors() {
    use wycheproof::TestResult;
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut checked = 0;
    for group in set.test_groups {
        let key = PublicKey::from_bytes(Algorithm::Ed25519, &group.key.pk);
        for test in group.tests {
            let accepted = match &key {
                Ok(key) => key.verify(&test.msg, &test.sig),
                Err(CryptoError::WeakPublicKey) => false,
                Err(e) => panic!("tc {}: {e}", test.tc_id),
            };
            match test.result {
                TestResult::Valid => {
                    assert!(accepted, "tc {} {} rejected", test.tc_id, test.comment)
                }
                TestResult::Invalid => {
                    assert!(!accepted, "tc {} {} accepted", test.tc_id, test.comment)
                }
                TestResult::Acceptable => {}
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} vectors");
}

#[test]
fn wycheproof_ml_dsa_65_verify_vectors() {
    use wycheproof::TestResult;
    let set =
        wycheproof::mldsa_verify::TestSet::load(wycheproof::mldsa_verify::TestName::MlDsa65Verify)
            .unwrap();
    let (mut checked, mut with_context) = (0, 0);
    for group in set.test_groups {
        let key = PublicKey::from_bytes(Algorithm::MlDsa65, &group.pubkey);
        let raw = <[u8; 1952]>::try_from(group.pubkey.as_ref()).ok();
        for test in group.tests {
            // JOSE uses the empty context only (RFC 9964 §5); vectors with a context exercise
            // an API we deliberately do not offer.
            if test.ctx.as_ref().is_some_and(|c| !c.is_empty()) {
                with_context += 1;
                continue;
            }
            let mut verdicts = vec![(
                "default",
                key.as_ref().is_ok_and(|k| k.verify(&test.msg, &test.sig)),
            )];
            for backend in Backend::AVAILABLE {
                let accepted = raw.as_ref().is_some_and(|raw| {
                    backend.valid_public_key(raw) && backend.verify(raw, &test.msg, &test.sig)
                });
                verdicts.push((backend.name(), accepted));
            }
            for (backend, accepted) in verdicts {
                match test.result {
                    TestResult::Valid => {
                        assert!(
                            accepted,
                            "{backend}: tc {} {} rejected",
                            test.tc_id, test.comment
                        )
                    }
                    TestResult::Invalid => {
                        assert!(
                            !accepted,
                            "{backend}: tc {} {} accepted",
                            test.tc_id, test.comment
                        )
                    }
                    TestResult::Acceptable => {}
                }
            }
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} vectors ({with_context} with context)"
    );
}
