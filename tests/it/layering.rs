//! The module graph of the library has no cycle: no module imports one that imports it.
//!
//! The check reads `src/` (the library crate; `main.rs` and `src/bin/` are separate crates on
//! top of it), finds every path a module names (`crate::…`, `super::…`, `self::…`, also inside
//! `use` groups), resolves it to the deepest module it reaches and lifts each edge to the two
//! siblings under the modules' common parent: `store::writer → store::dedupe` is an edge between
//! siblings of `store`, `ingest → store::writer` one between top-level modules. An edge between
//! a module and its own parent or child is not one (a parent re-exports its children). Test code
//! (`#[cfg(test)]` items and files) may reach anywhere and is left out.
//!
//! A failure names the modules that import each other and where each of their edges comes from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside the crate, `[]` for the crate root.
type Module = Vec<String>;

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = Graph::of_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        graph.modules.len() > 20,
        "found only {} modules: is the source walk broken?",
        graph.modules.len()
    );
    let edges = graph.sibling_edges();
    assert!(
        edges.contains_key(&(vec!["ingest".into()], vec!["store".into()])),
        "the check must see ingest → store; edges: {:?}",
        edges.keys().collect::<Vec<_>>()
    );
    let tangles = tangles(&edges);
    let mut why = String::new();
    for group in &tangles {
        let names: Vec<String> = group.iter().map(name).collect();
        why.push_str(&format!(
            "\nmodules that import each other: {}",
            names.join(", ")
        ));
        for ((a, b), from) in &edges {
            if group.contains(a) && group.contains(b) {
                why.push_str(&format!("\n  {} → {}: {from}", name(a), name(b)));
            }
        }
    }
    assert!(tangles.is_empty(), "import cycles:{why}");
}

/// The one-way flow, socket → server → ingest → dialect / store → redb, as rules of what a
/// lower module never names. (No cycle is not enough: an edge the wrong way would only need
/// its cycle partner removed to pass.)
const NEVER_NAMES: &[(&str, &[&str])] = &[
    (
        "store",
        &[
            "server", "admin", "ingest", "ops", "identity", "context", "http",
        ],
    ),
    (
        "identity",
        &["server", "admin", "ingest", "ops", "context", "http"],
    ),
    (
        "dialect",
        &["store", "identity", "ingest", "server", "admin", "context"],
    ),
    (
        "http",
        &[
            "store", "identity", "dialect", "ingest", "server", "admin", "context",
        ],
    ),
    ("ingest", &["server", "admin", "ops"]),
    ("admin", &["server", "ingest"]),
    ("ops", &["server", "ingest"]),
];

#[test]
fn lower_modules_never_name_higher_ones() {
    let graph = Graph::of_crate(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut wrong = Vec::new();
    for (module, targets) in &graph.modules {
        let Some(top) = module.first() else { continue };
        let Some((_, never)) = NEVER_NAMES.iter().find(|(m, _)| m == top) else {
            continue;
        };
        for target in targets {
            if target.first().is_some_and(|t| never.contains(&t.as_str())) {
                wrong.push(format!("{} names {}", name(module), name(target)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the flow:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_check_sees_a_cycle() {
    // A crate where `a` uses `b` and `b::inner` uses `crate::a`: lifted, that is a → b → a.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::{inner::Thing, Other};\n// crate::c is a comment\n",
    )
    .unwrap();
    std::fs::write(src.join("b/mod.rs"), "pub mod inner;\npub struct Other;\n").unwrap();
    std::fs::write(
        src.join("b/inner.rs"),
        "pub struct Thing(crate::a::A);\n#[cfg(test)]\nmod tests { use crate::c::D; }\n",
    )
    .unwrap();
    let graph = Graph::of_crate(src);
    let edges = graph.sibling_edges();
    let names: Vec<Vec<String>> = tangles(&edges)
        .iter()
        .map(|group| group.iter().map(name).collect())
        .collect();
    assert_eq!(names, [["a", "b"]], "a → b → a is a cycle");
    assert!(
        !graph.modules.contains_key(&vec!["c".to_owned()]),
        "comments and test code are not read"
    );
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

struct Graph {
    /// Every module with a file, and the modules its (non-test) code names.
    modules: BTreeMap<Module, BTreeSet<Module>>,
}

impl Graph {
    fn of_crate(src: &Path) -> Graph {
        let mut files = Vec::new();
        collect_files(src, src, &mut files);
        let known: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
        let mut test_only = BTreeSet::new();
        let mut code_of = BTreeMap::new();
        for (module, path) in &files {
            let text = std::fs::read_to_string(path).unwrap();
            let (code, test_children) = strip_tests(&blank_comments_and_strings(&text));
            for child in test_children {
                let mut m = module.clone();
                m.push(child);
                test_only.insert(m);
            }
            code_of.insert(module.clone(), code);
        }
        let mut modules = BTreeMap::new();
        for (module, code) in code_of {
            if test_only.iter().any(|t| module.starts_with(t)) {
                continue;
            }
            let named = paths_named(&code)
                .into_iter()
                .filter_map(|p| resolve(&module, &p, &known))
                .filter(|target| *target != module)
                .collect();
            modules.insert(module, named);
        }
        Graph { modules }
    }

    /// Edges lifted to siblings, each with one place that causes it.
    fn sibling_edges(&self) -> BTreeMap<(Module, Module), String> {
        let mut edges = BTreeMap::new();
        for (from, targets) in &self.modules {
            for to in targets {
                let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue; // parent and child
                }
                let a = from[..=common].to_vec();
                let b = to[..=common].to_vec();
                edges
                    .entry((a, b))
                    .or_insert_with(|| format!("{} names {}", name(from), name(to)));
            }
        }
        edges
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(Module, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).unwrap();
        if path.is_dir() {
            if rel != Path::new("bin") {
                collect_files(root, &path, out);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") || rel == Path::new("main.rs") {
            continue;
        }
        let mut module: Module = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
            module.pop();
        }
        out.push((module, path));
    }
}

/// The text with comments removed and string and char literals emptied, so that braces and
/// paths in them are not seen.
fn blank_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if raw_string_start(b, i).is_some() => {
                let hashes = raw_string_start(b, i).unwrap();
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            b'\'' if i + 2 < b.len() && b[i + 2] == b'\'' => {
                i += 3;
                out.push_str("' '");
            }
            _ => {
                let len = text[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[i..i + len]);
                i += len;
            }
        }
    }
    out
}

/// `Some(number of #)` when a raw (byte) string literal starts at `i`.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') && b[i - 1] != b'b' {
        return None;
    }
    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// The code without its `#[cfg(test)]` items, and the names of child modules declared
/// test-only (`#[cfg(test)] mod x;`).
fn strip_tests(code: &str) -> (String, Vec<String>) {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::new();
    let mut children = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        let end_semi = item.find(';');
        let end_brace = item.find('{');
        let end = match (end_semi, end_brace) {
            (Some(s), Some(o)) if s < o => s + 1,
            (Some(s), None) => s + 1,
            (_, Some(o)) => o + matching_brace(&item[o..]) + 1,
            (None, None) => item.len(),
        };
        let head = item[..end].trim_start();
        if let Some(decl) = head.strip_prefix("mod ").or(head.strip_prefix("pub mod "))
            && let Some(child) = decl.strip_suffix(';')
        {
            children.push(child.trim().to_owned());
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, children)
}

/// Offset of the `}` that closes the `{` at the start of `s`.
fn matching_brace(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len() - 1
}

/// Every path that starts with `crate`, `super` or `self`, as its segments (a `use` group
/// gives one path per member).
fn paths_named(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let at_word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| code[i..].starts_with(h));
        match head {
            Some(h) if at_word_start => {
                let mut prefix = vec![h.trim_end_matches(':').to_owned()];
                i = read_path(code, i + h.len(), &mut prefix, &mut out);
            }
            _ => i += 1,
        }
    }
    out
}

/// Reads the rest of a path after `prefix::` from `i`, pushing each complete path; returns
/// where it ended.
fn read_path(
    code: &str,
    mut i: usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let b = code.as_bytes();
    let depth = prefix.len();
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            // A group: each member is a path of its own.
            i += 1;
            loop {
                while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == b'}' {
                    i += 1;
                    break;
                }
                let before = i;
                i = read_path(code, i, prefix, out);
                if i == before {
                    i += 1;
                }
            }
            prefix.truncate(depth);
            return i;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i == start {
            break;
        }
        prefix.push(code[start..i].to_owned());
        if code[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    out.push(prefix.clone());
    prefix.truncate(depth);
    i
}

/// The deepest known module a path names from inside `module`.
fn resolve(module: &Module, path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("self") => {
            base = module.clone();
            rest = &path[1..];
        }
        Some("super") => {
            base = module.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut best = base.clone();
    let mut m = base;
    for segment in rest {
        m.push(segment.clone());
        if known.contains(&m) {
            best = m.clone();
        } else {
            break;
        }
    }
    Some(best)
}

/// The groups of modules that reach each other (strongly connected components of more than
/// one module), each sorted.
fn tangles(edges: &BTreeMap<(Module, Module), String>) -> Vec<Vec<Module>> {
    let mut next: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
        next.entry(b).or_default();
    }
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(m) = todo.pop() {
            for &n in &next[m] {
                if seen.insert(n) {
                    todo.push(n);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&Module, BTreeSet<&Module>> =
        next.keys().map(|&m| (m, reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for (&m, r) in &reaches {
        if done.contains(m) || !r.contains(m) {
            continue;
        }
        let group: Vec<Module> = r
            .iter()
            .filter(|&&n| reaches[n].contains(m))
            .map(|&n| n.clone())
            .collect();
        done.extend(group.iter().cloned());
        out.push(group);
    }
    out
}
