//! The library's layers, as docs/architecture.md draws them: every `crate::` path in `src/`
//! (outside unit tests and comments) points to a lower layer, so there is no import cycle, and
//! the verify-only core imports nothing of the operator's side.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each module of the library and its layer: a module may use only modules of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("crypto", 0),
    ("request", 0),
    ("identifier", 0),
    ("fsutil", 0),
    ("metrics", 0),
    ("reason", 1),
    ("jose", 2),
    ("clock", 3),
    ("token::trust", 4),
    ("token::certificate", 5),
    ("token::revocation", 5),
    ("token::access", 5),
    ("token::presentation", 6),
    ("token::delegation", 6),
    ("token::action", 7),
    ("token", 7),
    ("verify", 8),
    ("audit", 4),
    ("policy", 4),
    ("signals", 4),
    ("keystore", 5),
    ("store", 9),
    ("federation", 9),
    ("authority", 10),
];

/// The verify-only core (built without default features).
const CORE: &[&str] = &[
    "crypto",
    "request",
    "identifier",
    "reason",
    "jose",
    "clock",
    "token",
    "verify",
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| panic!("module {module} has no layer: add it to LAYERS"))
}

/// The module a file of `src/` belongs to (`token::x` for the signed objects).
fn module_of(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    match parts.as_slice() {
        [token, object, ..] if token == "token" && object != "mod" => format!("token::{object}"),
        [first, ..] => first.clone(),
        [] => unreachable!(),
    }
}

/// The modules a file's code names through `crate::` paths (and a token module through
/// `super::`), comments and unit tests left out.
fn uses(text: &str, module: &str) -> BTreeSet<String> {
    let code = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or_default();
    let mut found = BTreeSet::new();
    for line in code.lines().map(str::trim_start) {
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let mut names = rest.split("::").map(|s| {
                s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default()
            });
            let first = names.next().unwrap_or_default();
            if first == "token" {
                let object = names.next().unwrap_or_default();
                found.insert(format!("token::{object}"));
            } else {
                found.insert(first.to_owned());
            }
        }
        if let Some(object) = module
            .strip_prefix("token::")
            .and(line.strip_prefix("use super::"))
        {
            let object: String = object
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(format!("token::{object}"));
        }
    }
    found.remove(module);
    found
}

fn library_files() -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path != src.join("bin") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs")
                && path
                    .file_name()
                    .is_some_and(|n| n != "lib.rs" && n != "tests.rs")
            {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn every_module_uses_only_lower_layers_and_the_core_nothing_of_the_operator() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for file in library_files() {
        let module = module_of(file.strip_prefix(&src).unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        for used in uses(&text, &module) {
            if layer(&used) >= layer(&module) {
                wrong.push(format!("{} uses {used}: not a lower layer", file.display()));
            }
            let in_core = |m: &str| CORE.contains(&m.split("::").next().unwrap_or(m));
            if in_core(&module) && !in_core(&used) {
                wrong.push(format!("{} (core) uses {used} (operator)", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    let upward = "use crate::authority::Installation;\n";
    assert!(uses(upward, "token::certificate").contains("authority"));
    let sibling = "use super::action::ActionRequest;\n";
    assert!(uses(sibling, "token::delegation").contains("token::action"));
    let commented = "/// See [`crate::verify`].\n";
    assert!(uses(commented, "token::certificate").is_empty());
}
