//! The crate's rooms import downward only (see the layer diagram in `src/lib.rs` and
//! ARCHITECTURE.md), and each backend crate imports only shield-core. Read from the source, so a
//! new upward `use` fails here instead of growing a cycle.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first: a room may use its own modules and those of any room before it.
const ROOMS: [&str; 6] = ["net", "backend", "rest", "config", "daemon", "tools"];

fn rank(room: &str) -> Option<usize> {
    ROOMS.iter().position(|r| *r == room)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The rooms a file names as `crate::<room>`, outside comments.
fn rooms_used(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                used.insert(name);
            }
            rest = after;
        }
        // `use crate::{a, b::c}`: every name in the group.
        if let Some(group) = code.split("use crate::{").nth(1) {
            for part in group.split([',', '}']) {
                let name = part.trim().split("::").next().unwrap_or_default().trim().to_owned();
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        }
    }
    used
}

/// Every upward import in shield-bin's library, as "file: room → room".
fn upward_imports(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).expect("under src");
        let Some(room) = rel.components().next().and_then(|c| c.as_os_str().to_str()).map(str::to_owned) else {
            continue;
        };
        // The binaries and lib.rs sit above every room.
        let Some(from) = rank(&room) else { continue };
        let text = std::fs::read_to_string(&f).expect("read");
        for used in rooms_used(&text) {
            if let Some(to) = rank(&used) {
                if to > from {
                    bad.push(format!("{}: {} imports {}", rel.display(), room, used));
                }
            }
        }
    }
    bad
}

#[test]
fn rooms_import_downward_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = upward_imports(&src);
    assert!(bad.is_empty(), "upward imports (a room may use only the rooms below it):\n{}", bad.join("\n"));
    // Every room in the diagram exists, so a renamed directory cannot silently skip the check.
    for room in ROOMS {
        assert!(src.join(room).is_dir(), "src/{room} is gone: update ROOMS");
    }
}

#[test]
fn the_check_sees_an_upward_import() {
    // Fire test: a planted upward import is reported.
    let dir = tempfile::tempdir().expect("dir");
    for room in ROOMS {
        std::fs::create_dir(dir.path().join(room)).expect("room");
    }
    std::fs::write(dir.path().join("rest/x.rs"), "use crate::{config::NodeConfig, net::http};\n").expect("write");
    std::fs::write(dir.path().join("net/y.rs"), "// crate::daemon in a comment is fine\n").expect("write");
    std::fs::write(dir.path().join("daemon/z.rs"), "fn f() { crate::backend::vip::x(); }\n").expect("write");
    assert_eq!(upward_imports(dir.path()), vec!["rest/x.rs: rest imports config".to_owned()]);
}

/// The workspace crates a crate's manifest depends on.
fn workspace_deps(krate: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).expect("manifest");
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or_default();
    let deps = deps.split("\n[").next().unwrap_or_default();
    deps.lines()
        .filter_map(|l| l.split(['=', '.', ' ']).next())
        .filter(|name| name.starts_with("shield-"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn backend_crates_import_only_shield_core() {
    for krate in ["shield-db-postgres", "shield-dcs-etcd", "shield-dcs-consul"] {
        assert_eq!(workspace_deps(krate), vec!["shield-core".to_owned()], "{krate}");
    }
    assert!(workspace_deps("shield-core").is_empty(), "shield-core depends on no other workspace crate");
}
