//! The library's floors (ARCHITECTURE.md): every source file imports only its own room and lower
//! floors, rooms of one floor import each other without a circle, no door names another, and the
//! files of one folder import each other without a circle. Read from the sources, so a new module
//! without a floor fails here too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each room (a module path under `crate::`) and its floor, lowest first; a module belongs to the
/// room of its longest listed prefix.
const FLOORS: &[(&str, u8)] = &[
    ("error", 0),
    ("body", 0),
    ("slots", 0),
    ("cors", 0),
    ("outbound", 0),
    ("protocol", 0),
    ("monitoring", 0),
    ("config", 1),
    ("store", 2),
    ("data", 3),
    ("forge", 3),
    ("product", 3),
    ("auth", 4),
    ("descriptor", 5),
    ("state", 6),
    ("hooks", 7),
    ("ops", 7),
    ("residency", 7),
    ("personal_data", 7),
    ("retention", 7),
    ("telemetry", 7),
    ("monitoring::endpoint", 7),
    ("app", 8),
    ("server", 9),
    ("cli", 9),
];

/// The doors: the rooms of one may not name the rooms of another.
const DOORS: &[(&str, &[&str])] = &[
    ("connect", &["auth::connect"]),
    ("forge", &["auth::forge"]),
    ("container", &["auth::container"]),
];

struct Source {
    /// The file's module path (`store::cache`, `auth` for `auth/mod.rs`).
    module: Vec<String>,
    /// Whether it is a folder's `mod.rs`.
    is_mod: bool,
    /// Each module path the file's code names, with the line it is on.
    names: Vec<(Vec<String>, usize)>,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            let is_mod = module.last().is_some_and(|m| m == "mod");
            if is_mod || module == ["lib"] {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let names = named_paths(&text, &module, is_mod);
            Source {
                module,
                is_mod,
                names,
            }
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
}

/// The module paths a file's code (not its comments) names through `crate::` and `super::`.
fn named_paths(text: &str, module: &[String], is_mod: bool) -> Vec<(Vec<String>, usize)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module, is_mod))] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let preceded = rest[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                rest = &rest[at + prefix.len()..];
                if preceded {
                    continue;
                }
                for tail in expand(rest) {
                    let mut path = base.clone();
                    path.extend(tail);
                    found.push((path, number + 1));
                }
            }
        }
    }
    found
}

/// The module `super::` names from a file.
fn parent(module: &[String], is_mod: bool) -> Vec<String> {
    let mut parent = module.to_vec();
    if !is_mod || !parent.is_empty() {
        parent.pop();
    }
    parent
}

/// The paths after a `crate::` or `super::`: `a::b::C` gives `[a, b, C]`; a use tree such as
/// `{a, b::{self, c}}` gives each of its paths (`self` naming its prefix).
fn expand(rest: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    tree(&mut rest.chars().peekable(), &mut Vec::new(), &mut out);
    out
}

/// Reads one use tree from `chars` below `prefix` into `out`.
fn tree(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let depth = prefix.len();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                tree(chars, prefix, out);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                match chars.next() {
                    Some(',') => continue,
                    _ => break,
                }
            }
            prefix.truncate(depth);
            return;
        }
        let word: String =
            std::iter::from_fn(|| chars.next_if(|c| c.is_alphanumeric() || *c == '_')).collect();
        if word.is_empty() {
            break;
        }
        if word != "self" {
            prefix.push(word);
        }
        if chars.peek() == Some(&':') {
            chars.next();
            if chars.next_if_eq(&':').is_some() {
                continue;
            }
        }
        break;
    }
    if prefix.len() > depth || depth > 0 {
        out.push(prefix.clone());
    }
    prefix.truncate(depth);
}

/// The room of a module path: its longest prefix in [`FLOORS`].
fn room(path: &[String]) -> Option<(&'static str, u8)> {
    FLOORS
        .iter()
        .filter(|(room, _)| {
            let parts: Vec<&str> = room.split("::").collect();
            parts.len() <= path.len() && parts.iter().zip(path).all(|(a, b)| a == b)
        })
        .max_by_key(|(room, _)| room.len())
        .copied()
}

fn door(path: &[String]) -> Option<&'static str> {
    let joined = path.join("::");
    DOORS
        .iter()
        .find(|(_, rooms)| {
            rooms
                .iter()
                .any(|r| joined == *r || joined.starts_with(&format!("{r}::")))
        })
        .map(|(name, _)| *name)
}

/// A circle in `graph`, if there is one, as the nodes along it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_has_a_floor_and_imports_only_its_room_and_lower_floors() {
    let mut wrong = Vec::new();
    for source in sources() {
        if source.module.is_empty() {
            continue;
        }
        let Some((own, floor)) = room(&source.module) else {
            wrong.push(format!("{}: no floor in FLOORS", source.module.join("::")));
            continue;
        };
        for (path, line) in &source.names {
            let Some((other, other_floor)) = room(path) else {
                continue;
            };
            if other != own && other_floor > floor {
                wrong.push(format!(
                    "{} (floor {floor}) line {line} imports {} (floor {other_floor})",
                    source.module.join("::"),
                    path.join("::"),
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn rooms_of_one_floor_import_each_other_without_a_circle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources() {
        let Some((own, _)) = room(&source.module) else {
            continue;
        };
        for (path, _) in &source.names {
            if let Some((other, _)) = room(path)
                && other != own
            {
                graph
                    .entry(own.to_owned())
                    .or_default()
                    .insert(other.to_owned());
            }
        }
    }
    assert_eq!(circle(&graph), None, "a circle of rooms");
}

#[test]
fn no_door_names_another() {
    let mut wrong = Vec::new();
    for source in sources() {
        let Some(own) = door(&source.module) else {
            continue;
        };
        for (path, line) in &source.names {
            if let Some(other) = door(path)
                && other != own
            {
                wrong.push(format!(
                    "{} (the {own} door) line {line} names {} (the {other} door)",
                    source.module.join("::"),
                    path.join("::")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_files_of_one_folder_import_each_other_without_a_circle() {
    let sources = sources();
    let files: BTreeSet<Vec<String>> = sources
        .iter()
        .filter(|s| !s.is_mod && !s.module.is_empty())
        .map(|s| s.module.clone())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources.iter().filter(|s| !s.is_mod) {
        let folder = &source.module[..source.module.len().saturating_sub(1)];
        for (path, _) in &source.names {
            let sibling = files.iter().find(|f| {
                f.len() == source.module.len()
                    && f[..f.len() - 1] == *folder
                    && path.len() >= f.len()
                    && path[..f.len()] == f[..]
            });
            if let Some(sibling) = sibling
                && *sibling != source.module
            {
                graph
                    .entry(source.module.join("::"))
                    .or_default()
                    .insert(sibling.join("::"));
            }
        }
    }
    assert_eq!(circle(&graph), None, "a circle of sibling files");
}

#[test]
fn the_protocol_knows_no_server_and_no_database() {
    for source in sources()
        .iter()
        .filter(|s| s.module.first().is_some_and(|m| m == "protocol"))
    {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(source.module.join("/"))
            .with_extension("rs");
        let path = if path.exists() {
            path
        } else {
            path.with_extension("").join("mod.rs")
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in ["axum", "sqlx", "tokio_postgres", "hyper"] {
                assert!(
                    !code.contains(&format!("{word}::")),
                    "{} line {}: names {word}",
                    path.display(),
                    number + 1
                );
            }
        }
    }
}

#[test]
fn the_layer_check_sees_an_upward_import_a_circle_and_a_door_naming_another() {
    let store = named_paths(
        "use crate::auth::ForgeToken; // crate::app in a comment\n",
        &["store".into(), "cache".into()],
        false,
    );
    assert_eq!(store.len(), 1);
    assert_eq!(room(&store[0].0), Some(("auth", 4)));
    let grouped = named_paths(
        "use crate::{error::Error, store::{self, ClientKey}};\nuse super::jwt;",
        &["auth".into(), "forge".into()],
        false,
    );
    let named: Vec<String> = grouped.iter().map(|(p, _)| p.join("::")).collect();
    assert_eq!(
        named,
        ["error::Error", "store", "store::ClientKey", "auth::jwt"]
    );
    assert_eq!(
        door(&["auth".into(), "connect".into(), "install".into()]),
        Some("connect")
    );
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert_eq!(
        circle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
