//! What the benchmark harnesses in tools/ share: driving the release `agentseal` binary and
//! describing the machine a run was made on.

use std::error::Error;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

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
