//! Integration tests against the REAL key stores: a secret written by one process must be read by
//! the next one.
//!
//! - kernel keyutils: CLI processes in a row, and the library API in separate child processes;
//! - Secret Service: a real gnome-keyring-daemon, started by the test in a private D-Bus session
//!   (`dbus-run-session`), with its keyring files in a temporary directory;
//! - the passphrase-encrypted `age` file store;
//! - two installations on one machine never share keys.
//!
//! Child processes that must use the library API re-run this test binary with
//! [`HELPER_MODE`] set: the `helper_process` test then performs one key store operation and
//! prints its result (see [`helper`]). Without that variable it does nothing.
//!
//! Missing system tools (dbus-run-session, gnome-keyring-daemon) make the tests FAIL with a
//! pointer to `tools/install-test-deps.sh`; nothing is skipped.
#![cfg(unix)]

use crate::common;

use std::ffi::OsStr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agentseal::crypto::{Algorithm, Seed, SigningKey};
use agentseal::keystore::{self, KeyName, KeyStoreError, KeyStoreKind};
use agentseal::store::Store;
use serde_json::Value;
use tempfile::TempDir;

const AGENT: &str = "agent://acme.example/reviewer";
const AUD: &str = "https://deploy.acme.example";
const ACTION: &str = "deploy";
const PASSPHRASE: &str = "correct horse battery staple";

/// How long one child process may take before the test kills it and fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Environment variables that would change what the CLI does behind the test's back.
const AGENTSEAL_VARS: &[&str] = &[
    "AGENTSEAL_DATA_DIR",
    "AGENTSEAL_KEY_STORE",
    "AGENTSEAL_LOG",
    "AGENTSEAL_PASSPHRASE",
    "AGENTSEAL_PASSPHRASE_FILE",
];

// ---------------------------------------------------------------------------------------------
// Running child processes
// ---------------------------------------------------------------------------------------------

/// What a finished child process did.
struct Run {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with everything the process printed unless it exited 0.
    fn success(self) -> Run {
        assert!(self.status.success(), "{} failed: {self}", self.what);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}): {self}", self.what))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `command` with no stdin, capturing its output, and kills its whole process group if it
/// takes longer than [`CHILD_TIMEOUT`] (a Secret Service prompt, for one, would wait forever).
fn run(what: &str, mut command: Command) -> Run {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    read_in_background(0, stdout, tx.clone());
    read_in_background(1, stderr, tx.clone());
    drop(tx);
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let partial: Vec<String> = (0..2)
                .map_while(|_| rx.recv_timeout(Duration::from_secs(2)).ok())
                .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
                .collect();
            panic!("{what}: timed out after {CHILD_TIMEOUT:?}; output so far: {partial:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A daemon left behind holding a pipe open must not hang the test: wait a little, then go
    // on with what was read.
    let mut outputs = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((index, bytes)) => outputs[index] = bytes,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = outputs.map(|b| String::from_utf8_lossy(&b).into_owned());
    Run {
        what: what.to_owned(),
        status,
        stdout,
        stderr,
    }
}

/// Reads `pipe` to its end on a thread of its own and sends `(index, bytes)` to `tx`.
fn read_in_background(
    index: usize,
    mut pipe: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
) {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send((index, bytes));
    });
}

/// Kills the process group led by `pid` (a child this test started with its own group).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn agentseal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentseal")
}

/// The agentseal CLI on `dir` with `--key-store kind`, in a clean environment.
fn cli_command(dir: &Path, kind: &str, args: &[&str]) -> Command {
    let mut command = Command::new(agentseal_bin());
    for var in AGENTSEAL_VARS {
        command.env_remove(var);
    }
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--key-store", kind])
        .args(args);
    command
}

fn cli(dir: &Path, kind: &str, args: &[&str]) -> Run {
    run(
        &format!("agentseal --key-store {kind} {}", args.join(" ")),
        cli_command(dir, kind, args),
    )
}

/// `init`, `agent create`, `token sign` and `verify`, each in its own process; returns the token
/// and the `agent create` output.
fn full_flow(
    dir: &Path,
    kind: &str,
    extra_env: &[(&str, &str)],
    init_args: &[&str],
) -> (String, Value) {
    let step = |args: &[&str]| {
        let mut command = cli_command(dir, kind, args);
        command.envs(extra_env.iter().copied());
        run(
            &format!("agentseal --key-store {kind} {}", args.join(" ")),
            command,
        )
        .success()
    };
    let init = step(&[&["init"], init_args].concat()).json();
    assert_eq!(init["key_store"], kind, "init: {init}");
    let agent = step(&["agent", "create", AGENT]).json();
    assert_eq!(agent["agent_id"], AGENT);
    let token = step(&[
        "token", "sign", "--agent", AGENT, "--action", ACTION, "--aud", AUD,
    ])
    .stdout
    .trim()
    .to_owned();
    assert_eq!(token.split('.').count(), 3, "not a compact JWS: {token:?}");
    let verified = step(&["verify", &token, "--aud", AUD, "--action", ACTION]).json();
    assert_verified(&verified);
    (token, agent)
}

fn assert_verified(verified: &Value) {
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(verified["claims"]["sub"], AGENT, "{verified}");
    assert_eq!(verified["claims"]["aud"], AUD, "{verified}");
    assert_eq!(verified["claims"]["action"], ACTION, "{verified}");
}

/// The installation id recorded in `dir`'s database (it namespaces the key store entries).
fn install_id(dir: &Path) -> String {
    Store::open(&dir.join(agentseal::authority::DATABASE_FILE))
        .expect("open database")
        .meta("install_id")
        .expect("read install_id")
        .expect("install_id recorded")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn thumbprint_of(seed: &[u8], algorithm: Algorithm) -> String {
    let seed = Seed::from_slice(seed).expect("32-byte seed");
    agentseal::jose::thumbprint(SigningKey::from_seed(algorithm, &seed).public_key())
}

fn assert_no_secret(haystack: &[u8], secret: &[u8], place: &str) {
    if let Some(found) = common::find_secret(haystack, secret) {
        panic!("{place} contains the seed (as {found:?})");
    }
}

// ---------------------------------------------------------------------------------------------
// Library calls in child processes
// ---------------------------------------------------------------------------------------------

/// Set to `put`, `get` or `delete` to make the `helper_process` test act as a child process.
const HELPER_MODE: &str = "AGENTSEAL_KEYSTORES_TEST_HELPER";
const HELPER_KIND: &str = "AGENTSEAL_KEYSTORES_TEST_KIND";
const HELPER_DIR: &str = "AGENTSEAL_KEYSTORES_TEST_DIR";
const HELPER_INSTALL: &str = "AGENTSEAL_KEYSTORES_TEST_INSTALL";
/// Newline-separated owners (`ca`, `agent:<id>`); `put` and `get` take the first.
const HELPER_OWNERS: &str = "AGENTSEAL_KEYSTORES_TEST_OWNERS";
const HELPER_ALG: &str = "AGENTSEAL_KEYSTORES_TEST_ALG";
const HELPER_SEED: &str = "AGENTSEAL_KEYSTORES_TEST_SEED";
const RESULT_PREFIX: &str = "KEYSTORE-HELPER-RESULT ";

/// One key store operation in a child process, for the parent test to check.
#[derive(Debug, PartialEq, Eq)]
enum HelperResult {
    /// `put` and `delete` succeeded.
    Done,
    /// `get` found this seed.
    Seed(Vec<u8>),
    /// `get` found nothing.
    NotFound,
    /// The operation failed with this message.
    Failed(String),
}

/// The request for one child-process key store operation.
struct Helper<'a> {
    kind: KeyStoreKind,
    dir: &'a Path,
    installation: &'a str,
    owners: Vec<String>,
    algorithm: Algorithm,
    env: Vec<(&'a str, &'a str)>,
}

impl<'a> Helper<'a> {
    fn new(kind: KeyStoreKind, dir: &'a Path, installation: &'a str, owner: &str) -> Self {
        Helper {
            kind,
            dir,
            installation,
            owners: vec![owner.to_owned()],
            algorithm: Algorithm::Ed25519,
            env: Vec::new(),
        }
    }

    /// The child process (this test binary, running only `helper_process`) for `mode`.
    fn command(&self, mode: &str, seed: Option<&[u8]>) -> Command {
        let mut command = Command::new(std::env::current_exe().expect("test binary path"));
        for var in AGENTSEAL_VARS {
            command.env_remove(var);
        }
        command
            .args([
                "keystores::helper_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_MODE, mode)
            .env(HELPER_KIND, self.kind.name())
            .env(HELPER_DIR, self.dir)
            .env(HELPER_INSTALL, self.installation)
            .env(HELPER_OWNERS, self.owners.join("\n"))
            .env(HELPER_ALG, self.algorithm.name())
            .envs(self.env.iter().copied());
        if let Some(seed) = seed {
            command.env(HELPER_SEED, hex(seed));
        }
        command
    }

    fn run(&self, mode: &str, seed: Option<&[u8]>) -> HelperResult {
        let what = format!("{mode} in {} ({})", self.kind, self.owners.join(", "));
        let out = run(&what, self.command(mode, seed)).success();
        parse_helper_output(&out.stdout).unwrap_or_else(|| panic!("{what}: no result: {out}"))
    }

    fn put(&self, seed: &[u8]) -> HelperResult {
        self.run("put", Some(seed))
    }

    fn get(&self) -> HelperResult {
        self.run("get", None)
    }

    fn delete(&self) -> HelperResult {
        self.run("delete", None)
    }
}

fn parse_helper_output(stdout: &str) -> Option<HelperResult> {
    // The test harness prints "test helper_process ... " on the same line, before the result.
    let line = stdout.lines().find_map(|l| {
        l.find(RESULT_PREFIX)
            .map(|at| &l[at + RESULT_PREFIX.len()..])
    })?;
    Some(match line.split_once(' ').unwrap_or((line, "")) {
        ("done", _) => HelperResult::Done,
        ("seed", hex) => HelperResult::Seed(unhex(hex)),
        ("not-found", _) => HelperResult::NotFound,
        (_, message) => HelperResult::Failed(message.to_owned()),
    })
}

/// Runs in the child process: performs the operation described by the environment and prints
/// one result line. Does nothing in a normal test run.
#[test]
fn helper_process() {
    let Ok(mode) = std::env::var(HELPER_MODE) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
    let kind: KeyStoreKind = var(HELPER_KIND).parse().expect("kind");
    let dir = PathBuf::from(var(HELPER_DIR));
    let algorithm = Algorithm::from_name(&var(HELPER_ALG)).expect("algorithm");
    let installation = var(HELPER_INSTALL);
    let names: Vec<KeyName> = var(HELPER_OWNERS)
        .lines()
        .map(|owner| KeyName {
            installation: installation.clone(),
            owner: owner.to_owned(),
            kind: algorithm.to_string(),
        })
        .collect();
    let result = keystore::open(kind, &dir).and_then(|store| match mode.as_str() {
        "put" => {
            let seed = Seed::from_slice(&unhex(&var(HELPER_SEED))).expect("32-byte seed");
            store.put(&names[0], &seed).map(|()| "done".to_owned())
        }
        "get" => match store.get(&names[0]) {
            Ok(seed) => Ok(format!("seed {}", hex(seed.expose()))),
            Err(KeyStoreError::NotFound(_)) => Ok("not-found".to_owned()),
            Err(e) => Err(e),
        },
        "delete" => names
            .iter()
            .try_for_each(|name| store.delete(name))
            .map(|()| "done".to_owned()),
        other => panic!("unknown helper mode {other:?}"),
    });
    match result {
        Ok(line) => println!("{RESULT_PREFIX}{line}"),
        Err(e) => println!("{RESULT_PREFIX}error {e}"),
    }
}

/// Removes an installation's keyutils entries when dropped: they live in the per-user persistent
/// keyring, outside the temporary directory, and would otherwise outlive the test by days.
struct KeyutilsCleanup {
    dirs: Vec<(PathBuf, Vec<&'static str>)>,
}

impl KeyutilsCleanup {
    fn new() -> Self {
        KeyutilsCleanup { dirs: Vec::new() }
    }

    fn add(&mut self, dir: &Path, agents: &[&'static str]) {
        self.dirs.push((dir.to_owned(), agents.to_vec()));
    }
}

impl Drop for KeyutilsCleanup {
    fn drop(&mut self) {
        for (dir, agents) in &self.dirs {
            let Ok(Some(installation)) =
                Store::open(&dir.join(agentseal::authority::DATABASE_FILE))
                    .and_then(|store| store.meta("install_id"))
            else {
                continue;
            };
            let mut owners = vec!["ca".to_owned()];
            owners.extend(agents.iter().map(|a| format!("agent:{a}")));
            for algorithm in Algorithm::ALL {
                let mut helper = Helper::new(KeyStoreKind::Keyutils, dir, &installation, "ca");
                helper.owners = owners.clone();
                helper.algorithm = algorithm;
                // Best effort: a panic here would hide the test's own failure.
                let _ = helper
                    .command("delete", None)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Kernel keyutils
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[test]
fn keyutils_cli_keys_survive_from_one_process_to_the_next() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    let mut cleanup = KeyutilsCleanup::new();
    cleanup.add(&dir, &[AGENT]);

    // Process 1: init (CA keys into keyutils). Process 2: agent create (reads the CA keys,
    // writes the agent's). Process 3: token sign (reads the agent's). Process 4: verify.
    let (_, agent) = full_flow(&dir, "keyutils", &[], &[]);

    // The seed the next process finds is the agent's key (its thumbprint is on the certificate).
    let installation = install_id(&dir);
    let helper = Helper::new(
        KeyStoreKind::Keyutils,
        &dir,
        &installation,
        &format!("agent:{AGENT}"),
    );
    let HelperResult::Seed(seed) = helper.get() else {
        panic!("agent seed not readable from a new process")
    };
    assert_eq!(
        agent["key_ids"][0],
        thumbprint_of(&seed, Algorithm::Ed25519),
        "the stored seed is not the certified key"
    );

    // Without the key store entry, signing must fail rather than invent a key.
    assert_eq!(helper.delete(), HelperResult::Done);
    let sign = cli(
        &dir,
        "keyutils",
        &[
            "token", "sign", "--agent", AGENT, "--action", ACTION, "--aud", AUD,
        ],
    );
    assert_eq!(sign.code(), Some(2), "sign without a key: {sign}");
    assert!(sign.stdout.trim().is_empty(), "printed a token: {sign}");
    assert!(
        sign.stderr.contains("has lost a key") && sign.stderr.contains("agentseal restore"),
        "{sign}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn keyutils_library_put_in_one_process_get_in_another() {
    let tmp = TempDir::new().unwrap();
    let installation = agentseal::clock::random_id().unwrap();
    let owner = "agent:agent://acme.example/library-test";
    let seed = Seed::generate().unwrap();
    let helper = Helper::new(KeyStoreKind::Keyutils, tmp.path(), &installation, owner);

    assert_eq!(
        helper.get(),
        HelperResult::NotFound,
        "fresh name already set"
    );
    assert_eq!(helper.put(seed.expose()), HelperResult::Done);
    let read = helper.get();
    // Clean up before asserting, so a failure does not leave the seed in the keyring.
    let deleted = helper.delete();
    assert_eq!(read, HelperResult::Seed(seed.expose().to_vec()));
    assert_eq!(deleted, HelperResult::Done);
    assert_eq!(helper.get(), HelperResult::NotFound, "delete did not stick");
    // Deleting again is fine.
    assert_eq!(helper.delete(), HelperResult::Done);

    // The other algorithm's entry and another installation's entry are separate names.
    let mut other_alg = Helper::new(KeyStoreKind::Keyutils, tmp.path(), &installation, owner);
    other_alg.algorithm = Algorithm::MlDsa65;
    let other_installation = agentseal::clock::random_id().unwrap();
    let other_install = Helper::new(
        KeyStoreKind::Keyutils,
        tmp.path(),
        &other_installation,
        owner,
    );
    assert_eq!(helper.put(seed.expose()), HelperResult::Done);
    let other_alg_read = other_alg.get();
    let other_install_read = other_install.get();
    assert_eq!(helper.delete(), HelperResult::Done);
    assert_eq!(other_alg_read, HelperResult::NotFound);
    assert_eq!(other_install_read, HelperResult::NotFound);
}

// ---------------------------------------------------------------------------------------------
// 2. Secret Service (a real gnome-keyring-daemon in a private D-Bus session)
// ---------------------------------------------------------------------------------------------

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| {
                use std::os::unix::fs::PermissionsExt as _;
                path.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
}

/// Fails (never skips) when the tools for a real Secret Service are missing.
fn require_tools(programs: &[&str]) {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| find_in_path(p).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "missing {} on PATH: the Secret Service tests need a real D-Bus session and \
         gnome-keyring. Run tools/install-test-deps.sh (as root, or with sudo) to install them.",
        missing.join(", ")
    );
}

/// The shell run inside `dbus-run-session`. It starts gnome-keyring-daemon (secrets component
/// only) in that session, unlocking the `login` keyring with the password on stdin (creating it
/// on first use), waits until the daemon owns org.freedesktop.secrets, then evaluates `$STEPS`:
/// `step NAME CMD...` runs one command as its own process, output in `$WORK/NAME.{out,err}`, and
/// `seal ARGS...` is the agentseal CLI on `$DATA` with `--key-store secret-service`. The daemon
/// runs in the foreground of a background job, so the script stops it by pid when it ends.
const SESSION_SCRIPT: &str = r#"
set -u
log="$WORK/gnome-keyring-$SESSION.log"
fail() { echo "session script: $*" >&2; cat "$log" >&2 2>/dev/null; exit 90; }

printf '%s' "$KEYRING_PASSWORD" \
    | gnome-keyring-daemon --foreground --unlock --components=secrets >"$log" 2>&1 &
keyring_pid=$!
trap 'kill "$keyring_pid" 2>/dev/null; wait "$keyring_pid" 2>/dev/null' EXIT

if command -v dbus-send >/dev/null 2>&1; then
    tries=0
    until dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null \
            | grep -q 'boolean true'; do
        kill -0 "$keyring_pid" 2>/dev/null || fail "gnome-keyring-daemon exited early"
        tries=$((tries + 1))
        [ "$tries" -lt 300 ] || fail "gnome-keyring-daemon never claimed org.freedesktop.secrets"
        sleep 0.1
    done
else
    sleep 2
fi
kill -0 "$keyring_pid" 2>/dev/null || fail "gnome-keyring-daemon exited early"
# Export whatever the daemon announces (GNOME_KEYRING_CONTROL=... on some versions).
for assignment in $(grep -E '^GNOME_KEYRING_[A-Z_]+=' "$log"); do export "$assignment"; done

step() {
    name=$1; shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    code=$?
    echo "$name=$code"
    [ "$code" -eq 0 ] || { cat "$WORK/$name.err" >&2; fail "step $name exited $code"; }
}
seal() { "$AGENTSEAL" --data-dir "$DATA" --key-store secret-service "$@"; }

eval "$STEPS"
"#;

/// Runs `steps` (see [`SESSION_SCRIPT`]) in a fresh `dbus-run-session` with gnome-keyring
/// unlocked, keyrings kept under `root` (XDG_DATA_HOME and XDG_RUNTIME_DIR; HOME is untouched).
fn in_secret_service_session(
    session: &str,
    root: &Path,
    data: &Path,
    env: &[(&str, &OsStr)],
    steps: &str,
) -> Run {
    require_tools(&["dbus-run-session", "dbus-daemon", "gnome-keyring-daemon"]);
    let xdg_data = root.join("xdg-data");
    let xdg_runtime = root.join("xdg-runtime");
    for dir in [&xdg_data, &xdg_runtime] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let mut command = Command::new("dbus-run-session");
    for var in AGENTSEAL_VARS {
        command.env_remove(var);
    }
    command
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("GNOME_KEYRING_CONTROL")
        .env("XDG_DATA_HOME", &xdg_data)
        .env("XDG_RUNTIME_DIR", &xdg_runtime)
        .env("SESSION", session)
        .env("WORK", root)
        .env("DATA", data)
        .env("AGENTSEAL", agentseal_bin())
        .env("HELPER", std::env::current_exe().unwrap())
        .env("KEYRING_PASSWORD", "pw")
        .env("AGENT_ID", AGENT)
        .env("AUD", AUD)
        .env("ACTION", ACTION)
        .env("STEPS", steps)
        .envs(env.iter().copied())
        .args(["--", "sh", "-c", SESSION_SCRIPT]);
    run(&format!("dbus-run-session ({session})"), command)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

#[cfg(target_os = "linux")]
#[test]
fn secret_service_keys_survive_from_one_process_to_the_next() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path();
    let data = root.join("data");

    // Session 1: every CLI step is its own process, talking to one gnome-keyring-daemon.
    let first = in_secret_service_session(
        "first",
        root,
        &data,
        &[],
        r#"
        step init seal init
        step create seal agent create "$AGENT_ID"
        step sign seal token sign --agent "$AGENT_ID" --action "$ACTION" --aud "$AUD"
        step verify seal verify "$(cat "$WORK/sign.out")" --aud "$AUD" --action "$ACTION"
        mcp_session() {
            {
                printf '%s\n' \
                    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}' \
                    '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
                    '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sign_action","arguments":{"action":"deploy","audience":"svc"}}}'
                tries=0
                until grep -q '"id":2' "$WORK/mcp.out" || [ "$tries" -ge 300 ]; do
                    tries=$((tries + 1)); sleep 0.1
                done
            } | seal serve --agent "$AGENT_ID"
        }
        step mcp mcp_session
        "#,
    )
    .success();
    for step in ["init=0", "create=0", "sign=0", "verify=0", "mcp=0"] {
        assert!(first.stdout.contains(step), "{step} missing: {first}");
    }
    // A stdio server on this store signs, and ends without a panic: zbus's blocking calls (and
    // dropping its connection) must not run on the server's event-loop thread.
    let mcp_out = std::fs::read_to_string(root.join("mcp.out")).unwrap();
    let call = mcp_out
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|message| message["id"] == 2)
        .unwrap_or_else(|| panic!("no answer to the tool call: {mcp_out}"));
    assert!(
        call["result"]["structuredContent"]["token"].is_string(),
        "{call}"
    );
    let mcp_err = std::fs::read_to_string(root.join("mcp.err")).unwrap();
    assert!(!mcp_err.contains("panicked"), "{mcp_err}");
    let init = read_json(&root.join("init.out"));
    assert_eq!(init["key_store"], "secret-service", "{init}");
    assert_verified(&read_json(&root.join("verify.out")));
    let agent = read_json(&root.join("create.out"));

    // The secrets went into a keyring file under the temporary XDG_DATA_HOME.
    let keyring = root.join("xdg-data/keyrings/login.keyring");
    let keyring_bytes = std::fs::read(&keyring)
        .unwrap_or_else(|e| panic!("no keyring file at {}: {e}", keyring.display()));

    // Session 2: a new bus and a new daemon that unlocks that keyring from disk. A new process
    // signs with the key written in session 1, and the library reads the same seed in a child.
    let installation = install_id(&data);
    let owner = format!("agent:{AGENT}");
    let helper_env: [(&str, &OsStr); 6] = [
        (HELPER_MODE, OsStr::new("get")),
        (HELPER_KIND, OsStr::new(KeyStoreKind::SecretService.name())),
        (HELPER_DIR, data.as_os_str()),
        (HELPER_INSTALL, OsStr::new(&installation)),
        (HELPER_OWNERS, OsStr::new(&owner)),
        (HELPER_ALG, OsStr::new(Algorithm::Ed25519.name())),
    ];
    let second = in_secret_service_session(
        "second",
        root,
        &data,
        &helper_env,
        r#"
        step sign2 seal token sign --agent "$AGENT_ID" --action "$ACTION" --aud "$AUD"
        step verify2 seal verify "$(cat "$WORK/sign2.out")" --aud "$AUD" --action "$ACTION"
        step seed "$HELPER" keystores::helper_process --exact --nocapture --test-threads=1
        "#,
    )
    .success();
    assert!(second.stdout.contains("verify2=0"), "{second}");
    assert_verified(&read_json(&root.join("verify2.out")));
    let seed_out = std::fs::read_to_string(root.join("seed.out")).unwrap();
    let Some(HelperResult::Seed(seed)) = parse_helper_output(&seed_out) else {
        panic!("library could not read the agent seed from the Secret Service: {seed_out}")
    };
    assert_eq!(
        agent["key_ids"][0],
        thumbprint_of(&seed, Algorithm::Ed25519),
        "the stored seed is not the certified key"
    );
    // gnome-keyring encrypts the file with the keyring password.
    assert_no_secret(&keyring_bytes, &seed, "login.keyring");
}

// ---------------------------------------------------------------------------------------------
// 3. The age file store
// ---------------------------------------------------------------------------------------------

#[test]
fn file_store_keys_survive_and_stay_encrypted() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    let right = [("AGENTSEAL_PASSPHRASE", PASSPHRASE)];
    let (_, agent) = full_flow(&dir, "file", &right, &[]);

    let key_file = dir.join("keys.age");
    let encrypted = std::fs::read(&key_file).expect("keys.age written");
    assert!(
        encrypted.starts_with(b"age-encryption.org/v1\n"),
        "keys.age is not an age file"
    );

    // Read the seeds back through the library, in child processes that have the passphrase.
    let installation = install_id(&dir);
    let mut seeds = Vec::new();
    let agent_owner = format!("agent:{AGENT}");
    for (owner, algorithms) in [
        ("ca", &Algorithm::ALL[..]),
        (agent_owner.as_str(), &[Algorithm::Ed25519][..]),
    ] {
        for &algorithm in algorithms {
            let mut helper = Helper::new(KeyStoreKind::File, &dir, &installation, owner);
            helper.algorithm = algorithm;
            helper.env = right.to_vec();
            match helper.get() {
                HelperResult::Seed(seed) => seeds.push((owner, algorithm, seed)),
                other => panic!("{owner} {algorithm}: {other:?}"),
            }
        }
    }
    let (_, _, agent_seed) = seeds.last().unwrap();
    assert_eq!(
        agent["key_ids"][0],
        thumbprint_of(agent_seed, Algorithm::Ed25519),
        "the stored seed is not the certified key"
    );
    for (owner, algorithm, seed) in &seeds {
        assert_no_secret(&encrypted, seed, &format!("keys.age ({owner} {algorithm})"));
    }

    // The passphrase may also come from a file (first line).
    let passphrase_file = tmp.path().join("passphrase");
    std::fs::write(&passphrase_file, format!("{PASSPHRASE}\nignored\n")).unwrap();
    let mut command = cli_command(
        &dir,
        "file",
        &[
            "token", "sign", "--agent", AGENT, "--action", ACTION, "--aud", AUD,
        ],
    );
    command.env("AGENTSEAL_PASSPHRASE_FILE", &passphrase_file);
    let token = run("token sign with AGENTSEAL_PASSPHRASE_FILE", command).success();
    // (Opening an installation opens its key store, so even `verify` needs the passphrase.)
    let mut command = cli_command(
        &dir,
        "file",
        &["verify", token.stdout.trim(), "--any-audience"],
    );
    command.env("AGENTSEAL_PASSPHRASE_FILE", &passphrase_file);
    let verify = run("verify with AGENTSEAL_PASSPHRASE_FILE", command).success();
    assert_eq!(verify.json()["valid"], true);

    // A wrong passphrase: exit 2, a message about the passphrase, no key material anywhere.
    for args in [
        &[
            "token", "sign", "--agent", AGENT, "--action", ACTION, "--aud", AUD,
        ][..],
        &["agent", "create", "agent://acme.example/second"][..],
    ] {
        let mut command = cli_command(&dir, "file", args);
        command.env("AGENTSEAL_PASSPHRASE", "not the passphrase");
        let wrong = run(&format!("{} with a wrong passphrase", args[0]), command);
        assert_eq!(wrong.code(), Some(2), "{wrong}");
        assert!(wrong.stdout.trim().is_empty(), "printed a result: {wrong}");
        assert!(
            wrong.stderr.contains("passphrase"),
            "the error does not mention the passphrase: {wrong}"
        );
        for (owner, algorithm, seed) in &seeds {
            let place = format!("output of a wrong-passphrase run ({owner} {algorithm})");
            assert_no_secret(wrong.stdout.as_bytes(), seed, &place);
            assert_no_secret(wrong.stderr.as_bytes(), seed, &place);
        }
    }
    // No passphrase at all: the same, with a pointer to the variables.
    let none = cli(
        &dir,
        "file",
        &[
            "token", "sign", "--agent", AGENT, "--action", ACTION, "--aud", AUD,
        ],
    );
    assert_eq!(none.code(), Some(2), "{none}");
    assert!(none.stderr.contains("AGENTSEAL_PASSPHRASE"), "{none}");

    // The library says the same; and the failed attempts left the file as it was.
    let mut helper = Helper::new(KeyStoreKind::File, &dir, &installation, &agent_owner);
    helper.env = vec![("AGENTSEAL_PASSPHRASE", "not the passphrase")];
    match helper.get() {
        HelperResult::Failed(message) => {
            assert!(message.contains("wrong passphrase"), "{message}")
        }
        other => panic!("read with a wrong passphrase: {other:?}"),
    }
    assert_eq!(
        std::fs::read(&key_file).unwrap(),
        encrypted,
        "a failed attempt rewrote keys.age"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Two installations on one machine never share keys
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[test]
fn two_keyutils_installations_never_share_keys() {
    let tmp = TempDir::new().unwrap();
    let dirs = [tmp.path().join("one"), tmp.path().join("two")];
    let mut cleanup = KeyutilsCleanup::new();
    for dir in &dirs {
        cleanup.add(dir, &[AGENT]);
    }
    // Same CA id, same agent id: only the installation differs.
    let init_args = ["--ca-id", "urn:agentseal:ca:shared-name"];
    let [(token_one, agent_one), (token_two, agent_two)] = dirs
        .each_ref()
        .map(|dir| full_flow(dir, "keyutils", &[], &init_args));
    let [install_one, install_two] = dirs.each_ref().map(|dir| install_id(dir));
    assert_ne!(install_one, install_two);
    assert_ne!(
        agent_one["key_ids"], agent_two["key_ids"],
        "both installations certified the same agent key"
    );

    // Each installation's key store entry holds its own seed.
    let owner = format!("agent:{AGENT}");
    let seeds =
        [(&dirs[0], &install_one), (&dirs[1], &install_two)].map(
            |(dir, install)| match Helper::new(KeyStoreKind::Keyutils, dir, install, &owner).get() {
                HelperResult::Seed(seed) => seed,
                other => panic!("{}: {other:?}", dir.display()),
            },
        );
    assert_ne!(seeds[0], seeds[1], "the two installations share a seed");
    for (seed, agent) in [(&seeds[0], &agent_one), (&seeds[1], &agent_two)] {
        assert_eq!(agent["key_ids"][0], thumbprint_of(seed, Algorithm::Ed25519));
    }

    // A token from one does not verify in the other.
    for (dir, token) in [(&dirs[1], &token_one), (&dirs[0], &token_two)] {
        let verify = cli(dir, "keyutils", &["verify", token, "--aud", AUD]);
        assert_eq!(verify.code(), Some(1), "foreign token: {verify}");
        let answer = verify.json();
        assert_eq!(answer["valid"], false, "{answer}");
        let reason = answer["reasons"][0].as_str().unwrap_or_default();
        assert!(
            ["unknown_certificate", "bad_signature"].contains(&reason),
            "unexpected reason: {answer}"
        );
    }

    // Removing the first installation's keys leaves the second one working.
    let mut helper = Helper::new(KeyStoreKind::Keyutils, &dirs[0], &install_one, "ca");
    helper.owners.push(owner.clone());
    for algorithm in Algorithm::ALL {
        helper.algorithm = algorithm;
        assert_eq!(helper.delete(), HelperResult::Done);
    }
    let sign = [
        "token", "sign", "--agent", AGENT, "--action", ACTION, "--aud", AUD,
    ];
    let gone = cli(&dirs[0], "keyutils", &sign);
    assert_eq!(gone.code(), Some(2), "signed without its keys: {gone}");
    let token = cli(&dirs[1], "keyutils", &sign).success();
    let verify = cli(
        &dirs[1],
        "keyutils",
        &["verify", token.stdout.trim(), "--any-audience"],
    )
    .success();
    assert_eq!(verify.json()["valid"], true);
}
