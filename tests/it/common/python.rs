//! The Python venv the interop tests share: `<repo>/.venv` with the pinned packages of
//! `tools/interop/requirements.txt`, created or completed on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

pub fn run_ok(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Checks that the venv's interpreter has every `name==version` of the requirements file.
pub const HAS_REQUIREMENTS: &str = r##"
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, wanted = line.split("==")
    try:
        found = version(name)
    except PackageNotFoundError:
        sys.exit(f"{name} missing")
    if found != wanted:
        sys.exit(f"{name} {found} != {wanted}")
"##;

/// The venv interpreter, creating `<repo>/.venv` and installing the pinned packages if needed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = repo().join(".venv");
        let python = venv.join("bin").join("python");
        let requirements = repo().join("tools/interop/requirements.txt");
        if !python.exists() {
            run_ok(
                Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .current_dir(repo()),
            );
        }
        let satisfied = run(Command::new(&python)
            .args(["-c", HAS_REQUIREMENTS])
            .arg(&requirements))
        .status
        .success();
        if !satisfied {
            run_ok(
                Command::new(venv.join("bin").join("pip"))
                    .args(["install", "-q", "-r"])
                    .arg(&requirements)
                    .current_dir(repo()),
            );
        }
        python
    })
}
