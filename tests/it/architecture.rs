//! The shape of `src/` as checks, so a reviewer does not have to read the code to know it:
//! no import circle among modules, the wall clock read only by `src/clock.rs`, and no
//! stringly-typed errors on the restore path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module file of the library, by its path (`restore::postgres::catalog`), without its
/// unit tests (a test may reach anywhere).
fn modules() -> BTreeMap<String, (PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(
                parts.join("::"),
                (path, without_unit_tests(&text).to_string()),
            );
        }
    }
    out
}

fn without_unit_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// `crate::a::b::c` paths named in `text`, as lists of segments.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
            .collect();
        found.push(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    found
}

/// Module → the other modules it uses (the longest module prefix of each `crate::` path).
/// A module's own submodules and its parents do not count: a parent declares its children.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (name, (_, text)) in &modules {
        let mut uses = BTreeSet::new();
        // Comments (doc links among them) name modules without using them.
        let code: Vec<&str> = text.lines().filter(|line| !is_comment(line)).collect();
        for path in crate_paths(&code.join("\n")) {
            let target = (1..=path.len())
                .rev()
                .map(|k| path[..k].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target {
                let related = target == *name
                    || name.starts_with(&format!("{target}::"))
                    || target.starts_with(&format!("{name}::"));
                if !related {
                    uses.insert(target);
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let graph = import_graph();
    let found = circles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|component| {
            let edges: Vec<String> = component
                .iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[m]
                        .iter()
                        .filter(|t| component.contains(t))
                        .map(String::as_str)
                        .collect();
                    format!("{m} -> {}", inside.join(", "))
                })
                .collect();
            edges.join("; ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "import circles in src/: {}",
        described.join(" | ")
    );
}

#[test]
fn only_the_clock_reads_the_wall_clock() {
    let mut readers = Vec::new();
    for (name, (path, text)) in modules() {
        if name == "clock" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains("Utc::now()") && !is_comment(line) {
                readers.push(format!("{}:{}", path.display(), n + 1));
            }
        }
    }
    assert!(
        readers.is_empty(),
        "Utc::now() outside src/clock.rs: {readers:?}"
    );
}

#[test]
fn the_restore_path_has_typed_errors() {
    let mut stringly = Vec::new();
    for (name, (path, text)) in modules() {
        if !(name == "restore" || name.starts_with("restore::") || name == "modes::restore") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let compact: String = line.split_whitespace().collect();
            if !is_comment(line) && compact.contains("Result<") && compact.contains(",String>") {
                stringly.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        stringly.is_empty(),
        "Result<_, String> on the restore path: {stringly:#?}"
    );
}
