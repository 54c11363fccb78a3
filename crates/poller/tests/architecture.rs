//! Keeps `docs/architecture.md`'s table of who may import whom true: every `crate::ROOM`
//! named in a room's code (comments aside) must be one the table allows, so the rooms
//! never form a knot again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `docs/architecture.md`, "Who may import whom", as code.
fn allowed(room: &str) -> Option<&'static [&'static str]> {
    Some(match room {
        "model" | "levels" | "schedule" | "clock_estimate" | "heap_trim" => &[],
        "config" => &["levels"],
        "fetch" => &["config"],
        "fleet" => &["config", "fetch", "levels", "schedule", "clock_estimate", "model", "store", "cluster"],
        "cluster" => &["model", "schedule", "store"],
        "store" => &["model", "config"],
        "notify" => &["config", "fleet", "levels", "model", "store"],
        "web" => &["config", "fleet", "store", "notify", "model", "levels", "cluster"],
        "lib" => return None,
        _ => return Some(&["?"]),
    })
}

/// The room a source file belongs to: its first path segment under `src`.
fn room_of(rel: &Path) -> String {
    let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::NAME` in `text` outside comments, macros aside.
fn named_rooms(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            // `crate::name!` is an exported macro, at the crate's root: not a room.
            if !name.is_empty() && !rest[name.len()..].starts_with('!') {
                out.insert(name);
            }
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_room_imports_past_the_architecture_table() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        // Tests may reach anywhere.
        if rel.file_name().is_some_and(|n| n == "tests.rs") || rel.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let room = room_of(rel);
        let Some(ok) = allowed(&room) else { continue };
        let text = std::fs::read_to_string(file).expect("read source");
        // A file's own test module may reach anywhere too.
        let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
        for named in named_rooms(code) {
            if named != room && !ok.contains(&named.as_str()) {
                wrong.entry(format!("{} ({room})", rel.display())).or_default().insert(named);
            }
        }
    }
    assert!(wrong.is_empty(), "imports past docs/architecture.md's table (file (room): rooms it names): {wrong:#?}");
}

#[test]
fn the_table_reads_rooms_and_skips_comments() {
    let text = "use crate::fleet::Fleet;\n// see crate::web\nlet x = crate::store::open(u);\ncrate::store_suite!(H);";
    assert_eq!(named_rooms(text), BTreeSet::from(["fleet".to_string(), "store".to_string()]));
    assert_eq!(room_of(Path::new("store/sqlite/mod.rs")), "store");
    assert_eq!(room_of(Path::new("levels.rs")), "levels");
}
