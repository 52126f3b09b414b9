//! The Node 22 tools of the MCP tests (installed by `bash tools/install-test-deps.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What to do when a tool is missing.
pub const INSTALL_HINT: &str = "run `bash tools/install-test-deps.sh` to install it";

/// The pinned Node (22.19 or later) in `tools/<dir>/node_modules` and the script `entry` there,
/// or a failure saying how to install them; `what` names the tool in that message.
pub fn tool(dir: &str, entry: &str, what: &str) -> (PathBuf, PathBuf) {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(dir)
        .join("node_modules");
    let node = modules.join(".bin/node");
    let entry = modules.join(entry);
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| panic!("Node 22 not found at {}: {INSTALL_HINT}", node.display()));
    let minor = version
        .strip_prefix("v22.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|minor| minor.parse::<u32>().ok());
    assert!(
        minor.is_some_and(|minor| minor >= 19),
        "{} is Node {version}; {what} needs Node 22.19 or later: {INSTALL_HINT}",
        node.display()
    );
    assert!(
        entry.is_file(),
        "{what} is not installed ({} is missing): {INSTALL_HINT}",
        entry.display()
    );
    (node, entry)
}
