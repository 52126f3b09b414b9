//! No key material anywhere: run every CLI flow with trace logging, then scan stdout, stderr and
//! every file in the data directory for each seed and expanded secret key, as raw bytes and in
//! hex, base64 and base64url at every byte alignment.

use crate::common;

use std::path::Path;
use std::process::Command;

use agentseal::crypto::Algorithm;
use agentseal::keystore::{self, KeyName, KeyStoreKind};
use agentseal::store::Store;

const A: &str = "agent://acme.example/ed";
const B: &str = "agent://acme.example/pq";
const H: &str = "agent://acme.example/hybrid";

fn cli(dir: &Path, args: &[&str], transcript: &mut Vec<u8>) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--key-store", "keyutils", "--log", "trace"])
        .env(
            "AGENTSEAL_BACKUP_PASSPHRASE",
            "correct horse battery staple",
        )
        .args(args)
        .output()
        .unwrap();
    transcript.extend_from_slice(&out.stdout);
    transcript.extend_from_slice(&out.stderr);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn cli_flows_at_trace_level_never_reveal_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut t = Vec::new();
    cli(&dir, &["init", "--alg", "hybrid"], &mut t);
    cli(
        &dir,
        &[
            "agent", "create", A, "--alg", "ed25519", "--meta", "role=ci",
        ],
        &mut t,
    );
    cli(&dir, &["agent", "create", B, "--alg", "ml-dsa-65"], &mut t);
    cli(&dir, &["agent", "create", H, "--alg", "hybrid"], &mut t);
    cli(&dir, &["agent", "create", A], &mut t); // error path: exists
    cli(&dir, &["agent", "list"], &mut t);
    cli(&dir, &["status"], &mut t);
    let mut tokens = Vec::new();
    for agent in [A, B, H] {
        let token = cli(
            &dir,
            &[
                "token", "sign", "--agent", agent, "--action", "deploy", "--aud", "svc", "--arg",
                "n=1",
            ],
            &mut t,
        );
        assert!(
            !token.is_empty(),
            "no token for {agent}: {}",
            String::from_utf8_lossy(&t)
        );
        cli(
            &dir,
            &["verify", &token, "--aud", "svc", "--arg", "n=1"],
            &mut t,
        );
        cli(&dir, &["verify", &token, "--aud", "other"], &mut t);
        cli(&dir, &["cert", "show", agent], &mut t);
        cli(&dir, &["cert", "verify", agent], &mut t);
        cli(&dir, &["cert", "renew", agent], &mut t);
        tokens.push(token);
    }
    cli(
        &dir,
        &["revoke", "token", &tokens[0], "--reason", "test"],
        &mut t,
    );
    cli(&dir, &["check-revocation", "token", &tokens[0]], &mut t);
    cli(&dir, &["revoke", "cert", B, "--reason", "test"], &mut t);
    cli(
        &dir,
        &["token", "sign", "--agent", B, "--action", "x", "--aud", "y"],
        &mut t,
    ); // refused
    cli(&dir, &["crl"], &mut t);
    cli(&dir, &["jwks"], &mut t);
    cli(&dir, &["jwks", "--with-agents"], &mut t);
    cli(&dir, &["verify", "garbage", "--any-audience"], &mut t);
    cli(&dir, &["audit", "checkpoint"], &mut t);
    cli(&dir, &["audit", "prove", "2"], &mut t);
    cli(&dir, &["audit", "verify"], &mut t);
    cli(&dir, &["limits"], &mut t);
    // The CA's keys and A's are rotated: the scan below looks for the new seeds too.
    assert!(cli(&dir, &["ca", "rotate"], &mut t).contains("generation"));
    cli(&dir, &["cert", "renew", H], &mut t);
    assert!(cli(&dir, &["agent", "rotate", A, "--grace", "5m"], &mut t).contains("key_generation"));
    // The backup lands in the data directory, so the file scan below covers it too.
    let backup = dir.join("keys.backup");
    let backup = backup.to_str().unwrap();
    assert!(cli(&dir, &["backup", backup], &mut t).contains("entries"));
    assert!(cli(&dir, &["restore", backup], &mut t).contains("unchanged"));
    assert!(
        String::from_utf8_lossy(&t).contains("TRACE")
            || String::from_utf8_lossy(&t).contains("DEBUG"),
        "trace logging produced nothing: the scan would prove little"
    );

    let mut files = vec![("transcript".to_owned(), t)];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }

    let store = Store::open(&dir.join("agentseal.db")).unwrap();
    let install = store.meta("install_id").unwrap().unwrap();
    let keys = keystore::open(KeyStoreKind::Keyutils, &dir).unwrap();
    let mut names: Vec<KeyName> = Algorithm::ALL
        .iter()
        .flat_map(|&a| [KeyName::ca(&install, a), KeyName::ca_key(&install, a, 1)])
        .collect();
    names.push(KeyName::agent_key(&install, A, Algorithm::Ed25519, 1));
    names.push(KeyName::agent(&install, B, Algorithm::MlDsa65));
    names.extend(
        Algorithm::ALL
            .iter()
            .map(|&a| KeyName::agent(&install, H, a)),
    );
    let mut scanned = 0;
    for name in names {
        let seed = keys.get(&name).unwrap();
        for (what, secret) in common::secrets_of(seed.expose(), name.algorithm().unwrap()) {
            for (file, bytes) in &files {
                if let Some(found) = common::find_secret(bytes, &secret) {
                    panic!("{what} of {name} found in {file} as {found:?}");
                }
                scanned += 1;
            }
        }
    }
    assert!(scanned > 20);
    drop(keys);
    let ca_id = store.meta("ca_id").unwrap().unwrap();
    drop(store);
    cli(&dir, &["destroy", "--confirm", &ca_id], &mut Vec::new());
}
