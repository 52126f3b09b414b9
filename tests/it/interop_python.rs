//! Interop: independent JOSE verifiers accept agentseal action tokens.
//!
//! A fresh installation (file key store, so no OS keyring) is made with the CLI binary; it signs
//! one Ed25519 and one ML-DSA-65 action token and prints its JWK Set. The Python script
//! `tools/interop/verify_tokens.py` then verifies the Ed25519 token with PyJWT and the ML-DSA-65
//! token with jwcrypto, each with the key picked from the JWKS by `kid`. The Python packages are
//! installed into `<repo>/.venv` from `tools/interop/requirements.txt` on first use (needs
//! `python3` and PyPI access once); later runs reuse the venv when the pinned versions are there.

use std::process::Command;
use std::sync::OnceLock;

use agentseal::jose::{b64, b64_decode};

const AUD: &str = "https://svc.example";
const PASSPHRASE: &str = "interop-test-passphrase";
const ED_AGENT: &str = "agent://interop.example/ed25519";
const PQ_AGENT: &str = "agent://interop.example/ml-dsa-65";

use crate::common::python::{python, repo, run, run_ok};

/// What the CLI produced: two tokens and the JWK Set holding their keys.
struct Issued {
    ed25519_token: String,
    ml_dsa_65_token: String,
    jwks: String,
}

/// Runs the CLI against a throwaway installation (once per test binary: each call costs about a
/// second of scrypt).
fn issued() -> &'static Issued {
    static ISSUED: OnceLock<Issued> = OnceLock::new();
    ISSUED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let cli = |args: &[&str]| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_agentseal"));
            command
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--key-store", "file"])
                .args(args)
                .env("AGENTSEAL_PASSPHRASE", PASSPHRASE)
                .env_remove("AGENTSEAL_DATA_DIR")
                .env_remove("AGENTSEAL_KEY_STORE");
            run_ok(&mut command)
        };
        cli(&["init", "--alg", "ed25519"]);
        cli(&["agent", "create", ED_AGENT, "--alg", "ed25519"]);
        cli(&["agent", "create", PQ_AGENT, "--alg", "ml-dsa-65"]);
        let sign = |agent: &str| {
            let token = cli(&[
                "token", "sign", "--agent", agent, "--action", "deploy", "--aud", AUD, "--arg",
                "repo=web",
            ]);
            token.trim().to_owned()
        };
        Issued {
            ed25519_token: sign(ED_AGENT),
            ml_dsa_65_token: sign(PQ_AGENT),
            jwks: cli(&["jwks", "--with-agents"]),
        }
    })
}

/// Runs the verifier script with the issued JWKS and `tokens` (flag, token) pairs.
fn verify(tokens: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, &issued().jwks).expect("write JWKS");
    let mut command = Command::new(python());
    command
        .arg(repo().join("tools/interop/verify_tokens.py"))
        .arg("--jwks")
        .arg(&jwks)
        .args(["--aud", AUD]);
    for (flag, token) in tokens {
        command.arg(flag).arg(token);
    }
    let output = run(&mut command);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        output.status.success()
            || (output.status.code() == Some(1) && !stderr.contains("Traceback")),
        "the script crashed instead of reporting a failed check:\n{stdout}{stderr}"
    );
    (output.status.success(), stdout)
}

/// The line of `output` for `library`'s `check`, e.g. ("PyJWT", "accepts Ed25519 token").
fn line<'a>(output: &'a str, library: &str, check: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(library)) && l.contains(check))
        .unwrap_or_else(|| panic!("no {library} line for {check:?} in:\n{output}"))
}

fn passed(output: &str, library: &str, check: &str) -> bool {
    line(output, library, check).starts_with("PASS  ")
}

/// The token with its `action` claim changed after signing; header and signature kept.
fn tampered(token: &str) -> String {
    let [header, payload, signature]: [&str; 3] = token
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("compact JWS");
    let claims = String::from_utf8(b64_decode(payload).expect("payload base64url")).unwrap();
    assert!(claims.contains(r#""action":"deploy""#), "{claims}");
    let altered = claims.replace(r#""action":"deploy""#, r#""action":"delete""#);
    format!("{header}.{}.{signature}", b64(altered.as_bytes()))
}

#[test]
fn pyjwt_verifies_an_ed25519_action_token_with_the_jwks() {
    let (ok, output) = verify(&[("--ed25519-token", &issued().ed25519_token)]);
    assert!(ok, "verification failed:\n{output}");
    let accepted = line(&output, "PyJWT", "accepts Ed25519 token");
    assert!(accepted.starts_with("PASS  "), "{accepted}");
    assert!(
        accepted.contains("alg=EdDSA typ=agent-action+jwt"),
        "{accepted}"
    );
    assert!(
        accepted.contains(&format!("aud={AUD} iss={ED_AGENT}")),
        "{accepted}"
    );
    assert!(passed(
        &output,
        "PyJWT",
        "rejects Ed25519 token for another aud"
    ));
    assert!(passed(&output, "PyJWT", "rejects tampered Ed25519 token"));
}

#[test]
fn jwcrypto_verifies_an_ml_dsa_65_action_token_with_the_jwks() {
    let (ok, output) = verify(&[("--ml-dsa-65-token", &issued().ml_dsa_65_token)]);
    assert!(ok, "verification failed:\n{output}");
    let accepted = line(&output, "jwcrypto", "accepts ML-DSA-65 token");
    assert!(accepted.starts_with("PASS  "), "{accepted}");
    assert!(
        accepted.contains("alg=ML-DSA-65 typ=agent-action+jwt"),
        "{accepted}"
    );
    assert!(
        accepted.contains(&format!("aud={AUD} iss={PQ_AGENT}")),
        "{accepted}"
    );
    assert!(passed(
        &output,
        "jwcrypto",
        "rejects ML-DSA-65 token for another aud"
    ));
    assert!(passed(
        &output,
        "jwcrypto",
        "rejects tampered ML-DSA-65 token"
    ));
    assert!(passed(
        &output,
        "cryptography",
        "signature over JWS signing input"
    ));
}

#[test]
fn python_verifiers_reject_action_tokens_altered_after_signing() {
    let issued = issued();
    let ed = tampered(&issued.ed25519_token);
    let pq = tampered(&issued.ml_dsa_65_token);
    let (ok, output) = verify(&[("--ed25519-token", &ed), ("--ml-dsa-65-token", &pq)]);
    assert!(!ok, "a tampered token was accepted:\n{output}");
    let pyjwt = line(&output, "PyJWT", "accepts Ed25519 token");
    assert!(pyjwt.starts_with("FAIL  "), "{pyjwt}");
    assert!(pyjwt.contains("InvalidSignatureError"), "{pyjwt}");
    let jwcrypto = line(&output, "jwcrypto", "accepts ML-DSA-65 token");
    assert!(jwcrypto.starts_with("FAIL  "), "{jwcrypto}");
    assert!(jwcrypto.contains("InvalidJWSSignature"), "{jwcrypto}");
    let raw = line(&output, "cryptography", "signature over JWS signing input");
    assert!(raw.starts_with("FAIL  "), "{raw}");
    assert!(raw.contains("InvalidSignature"), "{raw}");
}

/// Runs tools/interop/verify_checkpoint.py (written from the C2SP and RFC 9162 texts, not from
/// our code) on `note`; whether it accepted, and its output.
fn check_checkpoint(note: &str, extra: &[String]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("checkpoint");
    std::fs::write(&path, note).expect("write note");
    let output = run(Command::new(python())
        .arg(repo().join("tools/interop/verify_checkpoint.py"))
        .arg("--note")
        .arg(&path)
        .args(extra));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("Traceback"),
        "the script crashed instead of reporting a failed check:\n{stdout}{stderr}"
    );
    (output.status.success(), stdout)
}

#[test]
fn an_independent_verifier_accepts_our_checkpoints_and_inclusion_proofs_and_rejects_altered_ones() {
    use agentseal::audit::checkpoint::Checkpoint;
    use agentseal::audit::merkle;
    use agentseal::crypto::{Algorithm, Seed, SigningKey};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    let key =
        |algorithm, byte| SigningKey::from_seed(algorithm, &Seed::from_slice(&[byte; 32]).unwrap());
    let (ed, ml) = (key(Algorithm::Ed25519, 1), key(Algorithm::MlDsa65, 2));
    let origin = "agentseal.example/audit";
    let records: Vec<Vec<u8>> = (0..11)
        .map(|i| format!("record {i}").into_bytes())
        .collect();
    let leaves: Vec<_> = records.iter().map(|r| merkle::leaf_hash(r)).collect();
    let checkpoint = Checkpoint {
        origin: origin.into(),
        size: leaves.len() as u64,
        root: merkle::root(&leaves),
    };
    let note = checkpoint.sign(&[&ed, &ml]).unwrap();
    let keys = vec![
        "--origin".to_owned(),
        origin.to_owned(),
        "--ed25519".to_owned(),
        STANDARD.encode(ed.public_key().to_bytes()),
        "--ml-dsa-65".to_owned(),
        STANDARD.encode(ml.public_key().to_bytes()),
    ];
    let proof_args = |index: usize, leaf: &merkle::Hash| {
        let proof = merkle::inclusion_proof(index, &leaves).unwrap();
        vec![
            "--leaf".to_owned(),
            STANDARD.encode(leaf),
            "--index".to_owned(),
            index.to_string(),
            "--proof".to_owned(),
            proof
                .iter()
                .map(|h| STANDARD.encode(h))
                .collect::<Vec<_>>()
                .join(","),
        ]
    };
    for index in [0, 5, 10] {
        let args = [keys.clone(), proof_args(index, &leaves[index])].concat();
        let (ok, output) = check_checkpoint(&note, &args);
        assert!(ok, "record {index}: {output}");
    }
    // A leaf that is not in the log, a changed size, a note without the ML-DSA-65 signature.
    let args = [keys.clone(), proof_args(3, &merkle::leaf_hash(b"forged"))].concat();
    assert!(!check_checkpoint(&note, &args).0);
    let resized = note.replacen("\n11\n", "\n12\n", 1);
    let (ok, output) = check_checkpoint(&resized, &keys);
    assert!(!ok && output.contains("does not verify"), "{output}");
    let ed_only = checkpoint.sign(&[&ed]).unwrap();
    let (ok, output) = check_checkpoint(&ed_only, &keys);
    assert!(!ok && output.contains("missing"), "{output}");
}

#[test]
fn an_independent_verifier_accepts_a_proof_and_checkpoint_from_the_cli_of_a_hybrid_ca() {
    use crate::common::hub::cli;
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    cli(&dir, &["init", "--alg", "hybrid"]);
    for name in ["a", "b", "c", "d"] {
        cli(
            &dir,
            &[
                "agent",
                "create",
                &format!("agent://acme.example/{name}"),
                "--alg",
                "ed25519",
            ],
        );
    }
    let status: serde_json::Value = serde_json::from_str(&cli(&dir, &["status"])).unwrap();
    let origin = status["audit_origin"].as_str().unwrap().to_owned();
    let jwks = tmp.path().join("jwks.json");
    std::fs::write(&jwks, cli(&dir, &["jwks"])).unwrap();
    let verify = |proved: &str| {
        let path = tmp.path().join("proof.json");
        std::fs::write(&path, proved).unwrap();
        let output = run(Command::new(python())
            .arg(repo().join("tools/interop/verify_checkpoint.py"))
            .args(["--origin", &origin, "--jwks"])
            .arg(&jwks)
            .arg("--proof-json")
            .arg(&path));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), stdout)
    };
    for seq in ["1", "3", "5"] {
        let proved = cli(&dir, &["audit", "prove", seq]);
        let (ok, output) = verify(&proved);
        assert!(ok, "record {seq}: {output}\n{proved}");
        assert!(
            output.contains("Ed25519, ML-DSA-65"),
            "both lines checked: {output}"
        );
    }
    // Another record's body under this proof, and a checkpoint of another size.
    let mut proved: serde_json::Value =
        serde_json::from_str(&cli(&dir, &["audit", "prove", "2"])).unwrap();
    let other: serde_json::Value =
        serde_json::from_str(&cli(&dir, &["audit", "prove", "3"])).unwrap();
    let genuine = proved.clone();
    proved["body"] = other["body"].clone();
    assert!(!verify(&proved.to_string()).0);
    let mut resized = genuine;
    let note = resized["checkpoint"].as_str().unwrap().to_owned();
    let size = note.lines().nth(1).unwrap().to_owned();
    resized["checkpoint"] = note.replacen(&format!("\n{size}\n"), "\n99\n", 1).into();
    let (ok, output) = verify(&resized.to_string());
    assert!(!ok && output.contains("does not verify"), "{output}");
}
