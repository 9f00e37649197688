//! The crate's top-level modules depend on one another without cycles, so
//! that each can be read, tested and changed knowing only the modules below it.
//!
//! A module's dependencies are the `crate::name` paths in its files
//! (`src/name.rs` and everything under `src/name/`), tests included, comments
//! not; `crate::{a, b::c}` names `a` and `b`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file at or under `path`.
fn rust_files(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, files);
        }
    } else if path.extension().is_some_and(|extension| extension == "rs") {
        files.push(path.to_owned());
    }
}

/// `text` without `//` comments (doc comments included).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifier `text` starts with (after spaces).
fn leading_identifier(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level names of the `crate::` paths in `text`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.insert(leading_identifier(rest).to_owned());
            continue;
        };
        // The group's top-level items, up to its closing brace.
        let (mut depth, mut item_start) = (0, 0);
        for (index, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.insert(leading_identifier(&group[item_start..index]).to_owned());
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.insert(leading_identifier(&group[item_start..index]).to_owned());
                    item_start = index + 1;
                }
                _ => {}
            }
        }
    }
    names
}

/// Top-level module → the other top-level modules it names.
fn module_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = match path.file_stem().and_then(|stem| stem.to_str()) {
            Some("lib" | "main") | None => continue,
            Some(name) => name.to_owned(),
        };
        rust_files(&path, modules.entry(name).or_default());
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(module, files)| {
            let mut dependencies = BTreeSet::new();
            for file in files {
                let text = without_comments(&fs::read_to_string(file).unwrap());
                dependencies.extend(
                    named_modules(&text)
                        .into_iter()
                        .filter(|name| names.contains(name) && name != module),
                );
            }
            (module.clone(), dependencies)
        })
        .collect()
}

/// A cycle through `path`'s last module, if there is one (depth first).
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let module = path.last().unwrap().clone();
    for next in &graph[&module] {
        if let Some(start) = path.iter().position(|on_path| on_path == next) {
            let mut cycle = path[start..].to_vec();
            cycle.push(next.clone());
            return Some(cycle);
        }
        if done.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(cycle) = find_cycle(graph, path, done) {
            return Some(cycle);
        }
        path.pop();
    }
    done.insert(module);
    None
}

#[test]
fn top_level_modules_have_no_import_cycles() {
    let graph = module_dependencies();
    assert!(graph.len() > 10, "modules found: {:?}", graph.keys());
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if done.contains(module) {
            continue;
        }
        if let Some(cycle) = find_cycle(&graph, &mut vec![module.clone()], &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_reader_finds_plain_and_grouped_paths() {
    let text = "use crate::a::B;\nuse crate::{c, d::{E, F}, g::H};\nlet x = crate::i::j();\nuse $crate::k;\n";
    let expected: BTreeSet<String> = ["a", "c", "d", "g", "i"].map(String::from).into();
    assert_eq!(named_modules(text), expected);
}
