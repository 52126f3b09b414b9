//! What the benchmark harnesses in tools/ share: driving the release `agentseal` binary and
//! describing the machine a run was made on.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

/// A harness result.
pub type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Warns when `binary` is older than the sources it would measure.
pub fn warn_if_stale(binary: &Path) {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let newest = std::fs::read_dir(src)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if newest > built {
        eprintln!(
            "warning: {} is older than src/; run `cargo build --release` to measure the current code",
            binary.display()
        );
    }
}

/// Runs one `agentseal` command against `dir` with the keyutils store; returns its stdout.
pub fn cli(agentseal: &Path, dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(agentseal)
        .arg("--data-dir")
        .arg(dir)
        .args(["--key-store", "keyutils"])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "agentseal {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Tool arguments from a `json!` object.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("tool arguments must be a JSON object, not {other}"),
    }
}

/// CPUs and load, printed with every table (figures from a busy machine are floors).
pub fn machine_note() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".to_owned());
    format!("{cpus} CPUs available, 1-minute load average {load}")
}

/// A temporary installation (keyutils key store) with the given agents. Dropping it destroys
/// the installation (database and keyring entries) and then the temporary directory.
pub struct Installation {
    pub agentseal: PathBuf,
    pub dir: PathBuf,
    pub ca_id: String,
    destroyed: bool,
    /// Removed after `Drop::drop` has run `destroy` (fields are dropped after it).
    _tmp: tempfile::TempDir,
}

impl Installation {
    /// `init`, then `agent create ID --alg ALG` for each of `agents`.
    pub fn create<'a>(
        agentseal: &Path,
        agents: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Installation> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        let info: Value = serde_json::from_str(&cli(agentseal, &dir, &["init"])?)?;
        let ca_id = info["ca_id"]
            .as_str()
            .ok_or("`init` printed no ca_id")?
            .to_owned();
        // From here on the guard exists, so a failing `agent create` still cleans up.
        let installation = Installation {
            agentseal: agentseal.to_owned(),
            dir,
            ca_id,
            destroyed: false,
            _tmp: tmp,
        };
        for (agent, alg) in agents {
            installation.cli(&["agent", "create", agent, "--alg", alg])?;
        }
        // Load is measured through a policy that is evaluated but never limits (the default
        // would rate-limit each agent to 120 signatures a minute).
        std::fs::write(
            installation.dir.join("policy.rego"),
            "package agentseal\ndefault decision := {\"allow\": true}\n",
        )?;
        Ok(installation)
    }

    /// Runs one `agentseal` command on this installation; returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        cli(&self.agentseal, &self.dir, args)
    }

    /// Destroys the installation, reporting failure (the `Drop` fallback can only print it).
    pub fn destroy(mut self) -> Result<()> {
        self.destroyed = true;
        self.cli(&["destroy", "--confirm", &self.ca_id])?;
        Ok(())
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        if !self.destroyed
            && let Err(e) = self.cli(&["destroy", "--confirm", &self.ca_id])
        {
            eprintln!(
                "warning: could not destroy the temporary installation in {} (CA {}): {e}",
                self.dir.display(),
                self.ca_id
            );
        }
    }
}

/// What `/proc` says about a process: memory, threads, CPU time.
#[derive(Clone, Copy, Default)]
#[allow(dead_code)] // each harness reports the fields it needs
pub struct ProcessSample {
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    pub threads: u64,
    /// User + system CPU time.
    pub cpu: Duration,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat` ("self" for this process).
pub fn sample(pid: &str) -> Result<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, hence the last ')'): utime and
    // stime are fields 14 and 15 of the whole line, in USER_HZ ticks (100 per second on Linux).
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Ok(ProcessSample {
        peak_rss_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        cpu: Duration::from_millis(ticks * 10),
    })
}

/// The latency of one `fsync` on the disk that holds `dir`: `rounds` times, 4 KiB appended to a
/// scratch file and `fsync`ed; returns the median and the 99th percentile. This is the floor under
/// any write that must be on disk before it is acknowledged, measured in the same run as the
/// figures it explains.
pub fn fsync_latency(dir: &Path, rounds: usize) -> Result<(Duration, Duration)> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe.tmp");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        file.write_all(&block)?;
        let start = Instant::now();
        file.sync_data()?;
        samples.push(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}
