//! Backup and restore of the key store: keyutils loses every key at a reboot, and a backup is
//! the only way back. Wiping the key store entries here stands in for the reboot (the test
//! cannot reboot the machine); the entries are deleted through the real keyutils store.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::{Command, Output};

use agentseal::keystore::{self, KeyName, KeyStoreKind};
use agentseal::store::Store;
use serde_json::Value;

const A: &str = "agent://acme.example/alice";
const PASSPHRASE: &str = "correct horse battery staple";

fn run(dir: &Path, passphrase: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(dir)
        .args(["--key-store", "keyutils"])
        .env("AGENTSEAL_BACKUP_PASSPHRASE", passphrase)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, PASSPHRASE, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every key store entry of the installation, as the key store names them.
fn entries(dir: &Path) -> Vec<KeyName> {
    let store = Store::open(&dir.join("agentseal.db")).unwrap();
    let install = store.meta("install_id").unwrap().unwrap();
    let mut names: Vec<KeyName> = agentseal::crypto::Algorithm::ALL
        .iter()
        .map(|&a| KeyName::ca(&install, a))
        .collect();
    names.push(KeyName::agent(
        &install,
        A,
        agentseal::crypto::Algorithm::Ed25519,
    ));
    names.push(KeyName::audit_mark(&install));
    names
}

/// What a reboot does to keyutils: every entry gone.
fn wipe(dir: &Path) {
    let keys = keystore::open(KeyStoreKind::Keyutils, dir).unwrap();
    for name in entries(dir) {
        keys.delete(&name).unwrap();
    }
}

fn sign(dir: &Path) -> Output {
    run(
        dir,
        PASSPHRASE,
        &[
            "token", "sign", "--agent", A, "--action", "deploy", "--aud", "svc",
        ],
    )
}

#[test]
fn a_backup_restores_the_same_keys_after_they_are_lost_and_a_wrong_secret_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ok(&dir, &["init", "--alg", "hybrid"]);
    ok(&dir, &["agent", "create", A, "--alg", "ed25519"]);
    ok(&dir, &["audit", "checkpoint"]);
    let jwks = ok(&dir, &["jwks"]);
    let before = String::from_utf8(sign(&dir).stdout).unwrap();
    let file = tmp.path().join("keys.backup");
    let file = file.to_str().unwrap();

    // A passphrase that is too short, and no passphrase at all, are refused.
    assert!(failed(&run(&dir, "short", &["backup", file])).contains("at least 12"));
    let report: Value = serde_json::from_str(&ok(&dir, &["backup", file])).unwrap();
    assert_eq!(report["entries"].as_array().unwrap().len(), 4, "{report}");
    // Not replaced without --force.
    assert!(failed(&run(&dir, PASSPHRASE, &["backup", file])).contains("exists"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The keys are lost: calls and servers say so, naming the cause and the way back.
    wipe(&dir);
    let stderr = failed(&sign(&dir));
    assert!(
        stderr.contains("agentseal restore") && stderr.contains("reboot"),
        "{stderr}"
    );
    let stderr = failed(&run(&dir, PASSPHRASE, &["serve", "--agent", A]));
    assert!(
        stderr.contains("agentseal restore") && stderr.contains("reboot"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ca#ed25519, ca#ml-dsa-65") && stderr.contains(A),
        "{stderr}"
    );

    // A wrong passphrase is refused and writes nothing.
    let stderr = failed(&run(&dir, "not the passphrase at all", &["restore", file]));
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    assert!(failed(&sign(&dir)).contains("agentseal restore"));

    // Restored: the same keys (the CA's public keys are unchanged), calls work again.
    let report: Value = serde_json::from_str(&ok(&dir, &["restore", file])).unwrap();
    assert_eq!(report["restored"].as_array().unwrap().len(), 4, "{report}");
    assert_eq!(ok(&dir, &["jwks"]), jwks);
    let token = String::from_utf8(sign(&dir).stdout).unwrap();
    let verified = ok(&dir, &["verify", token.trim(), "--aud", "svc"]);
    assert!(verified.contains("\"valid\": true"), "{verified}");
    let old = ok(&dir, &["verify", before.trim(), "--aud", "svc"]);
    assert!(old.contains("\"valid\": true"), "{old}");
    assert!(ok(&dir, &["audit", "verify"]).contains("\"checked_mark\": true"));
    // Restoring again changes nothing.
    let report: Value = serde_json::from_str(&ok(&dir, &["restore", file])).unwrap();
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 4, "{report}");
    // A different key in the store is not overwritten without --replace.
    let agent_key = entries(&dir)
        .into_iter()
        .find(|n| n.owner.starts_with("agent:"))
        .unwrap();
    let keys = keystore::open(KeyStoreKind::Keyutils, &dir).unwrap();
    keys.put(&agent_key, &agentseal::crypto::Seed::generate().unwrap())
        .unwrap();
    let stderr = failed(&run(&dir, PASSPHRASE, &["restore", file]));
    assert!(stderr.contains("--replace"), "{stderr}");
    let report: Value = serde_json::from_str(&ok(&dir, &["restore", file, "--replace"])).unwrap();
    assert_eq!(report["restored"].as_array().unwrap().len(), 1, "{report}");
    assert!(sign(&dir).status.success());

    // A backup of another installation is refused.
    let other = tmp.path().join("other");
    ok(&other, &["init", "--alg", "ed25519"]);
    let stderr = failed(&run(&other, PASSPHRASE, &["restore", file]));
    assert!(stderr.contains("not of this installation"), "{stderr}");
}

#[test]
fn a_backup_made_for_an_age_recipient_opens_only_with_its_identity() {
    use age::secrecy::ExposeSecret as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    ok(&dir, &["init", "--alg", "ed25519"]);
    ok(&dir, &["agent", "create", A, "--alg", "ed25519"]);
    let identity = age::x25519::Identity::generate();
    let identity_file = tmp.path().join("identity.txt");
    std::fs::write(
        &identity_file,
        format!("{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    let stranger = tmp.path().join("stranger.txt");
    let other = age::x25519::Identity::generate();
    std::fs::write(
        &stranger,
        format!("{}\n", other.to_string().expose_secret()),
    )
    .unwrap();
    let file = tmp.path().join("keys.age-backup");
    let file = file.to_str().unwrap();
    let recipient = identity.to_public().to_string();
    // No passphrase needed for a recipient.
    let out = run(&dir, "", &["backup", file, "--recipient", &recipient]);
    assert!(out.status.success(), "{out:?}");
    wipe(&dir);
    let stderr = failed(&run(
        &dir,
        "",
        &["restore", file, "--identity", stranger.to_str().unwrap()],
    ));
    assert!(stderr.contains("wrong passphrase or identity"), "{stderr}");
    let out = run(
        &dir,
        "",
        &[
            "restore",
            file,
            "--identity",
            identity_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(sign(&dir).status.success());
}

#[test]
fn init_on_keyutils_warns_before_it_creates_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // `auto` without a session bus is keyutils too.
    let out = Command::new(env!("CARGO_BIN_EXE_agentseal"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["init", "--alg", "ed25519"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("AGENTSEAL_KEY_STORE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr.find("warning: kernel keyutils").expect("a warning");
    let created = stderr
        .find("created; keys in the keyutils key store")
        .expect("created");
    assert!(warning < created, "{stderr}");
    assert!(
        stderr.contains("do not survive a reboot") && stderr.contains("agentseal backup FILE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--key-store secret-service or file"),
        "{stderr}"
    );
    let status: Value = serde_json::from_str(&ok(&dir, &["status"])).unwrap();
    ok(
        &dir,
        &["destroy", "--confirm", status["ca_id"].as_str().unwrap()],
    );
}
