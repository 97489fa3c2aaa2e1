//! The crate's top-level modules form a DAG, in the intended layer order (checked on every `cargo test`).
//!
//! The check reads every file under `src/` as text: comments, string and character literals are blanked,
//! `#[cfg(test)]` items are skipped (a module's tests may use anything), and every `crate::` path outside
//! them (including `use crate::{a, b}` groups, and `super::` chains that climb to the crate root) names the
//! top-level module it reaches into (`src/X.rs` or `src/X/`). That gives one edge per (module, named
//! module), with the file:line of every place that makes it. Two assertions:
//! - no cycle: every edge that lies on a cycle is printed with one cycle through it, e.g.
//!   `cli -> control -> cli`, and where each of its edges is made;
//! - imports point down [`LAYERS`]: an edge to a module of the same or a higher layer is printed, and so
//!   is a module missing from the list (a new module has to be placed).
//!
//! Both list everything they find, not the first problem only. The checker itself is tested on small
//! fake trees at the end of this file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The layers of the crate, lowest first; a module may name modules of lower layers only. The modules
/// of one layer do not depend on each other for their place (the no-cycle test still applies).
const LAYERS: &[&[&str]] = &[
    &["types"],
    &["config"],
    &["logging", "notify"],
    &["mail"],
    &["desk"],
    &["store"],
    &["telemetry"],
    &["outbound"],
    &["service"],
    &["intake", "schedule", "privacy", "stats", "http", "alerts"],
    &["commands"],
    &["control"],
    &["daemon"],
    &["demo"],
    &["cli"],
];

/// Where one module names another: `src/`-relative file and 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    file: String,
    line: usize,
}

/// The module graph: for each top-level module, the modules it names and where.
#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<String>,
    edges: BTreeMap<String, BTreeMap<String, Vec<Site>>>,
}

impl Graph {
    fn sites(&self, from: &str, to: &str) -> &[Site] {
        self.edges
            .get(from)
            .and_then(|m| m.get(to))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn successors(&self, from: &str) -> impl Iterator<Item = &String> {
        self.edges.get(from).into_iter().flat_map(|m| m.keys())
    }

    fn edge_count(&self) -> usize {
        self.edges.values().map(BTreeMap::len).sum()
    }
}

// ---------------------------------------------------------------------------------------------------
// Reading the source

/// `text` with comments and the contents of string and char literals replaced by spaces (newlines kept,
/// so line numbers stay right): what is left is code.
fn blank_non_code(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            let end = c[i..]
                .iter()
                .position(|&x| x == '\n')
                .map_or(c.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && next == Some('*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < c.len() && depth > 0 {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c[i] == 'r'
            && (i == 0
                || !is_ident(c[i - 1])
                || (c[i - 1] == 'b' && (i < 2 || !is_ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            // A raw string r"…", r#"…"#, br"…" (a lone `r#ident` is a raw identifier, not a string).
            let hashes = c[i + 1..].iter().take_while(|&&x| x == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                i += 1;
                continue;
            }
            let body = i + 2 + hashes;
            let mut j = body;
            let end = loop {
                if j >= c.len() {
                    break c.len();
                }
                if c[j] == '"'
                    && c[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&x| x == '#')
                        .count()
                        == hashes
                {
                    break j;
                }
                j += 1;
            };
            blank(&mut out, body, end);
            i = end + 1 + hashes;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a), which stays.
            if next == Some('\\') {
                // The escaped character itself may be a quote ('\''): search after it.
                let end = c[(i + 3).min(c.len())..]
                    .iter()
                    .position(|&x| x == '\'')
                    .map_or(c.len(), |p| i + 3 + p);
                blank(&mut out, i + 1, end);
                i = end + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                blank(&mut out, i + 1, i + 2);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// Blank every item marked `#[cfg(test)]` in `code` (already without comments and strings). Returns the
/// names of out-of-line test modules (`#[cfg(test)] mod tests;`), whose files are skipped too.
fn blank_test_items(code: &mut [char]) -> Vec<String> {
    let mut test_mods = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i] != '#' {
            i += 1;
            continue;
        }
        let Some(after) = cfg_test_attribute(code, i) else {
            i += 1;
            continue;
        };
        // The item runs to a `;` outside brackets, or to the `}` closing its body.
        // (A field, an argument or a match arm ends at a `,`, or where its enclosing bracket closes.)
        let (mut depth, mut j, mut end) = (0i32, after, code.len());
        while j < code.len() {
            match code[j] {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth < 0 {
                        end = j;
                        break;
                    }
                    if depth == 0 && code[j] == '}' {
                        end = j + 1;
                        break;
                    }
                }
                ';' | ',' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let item: String = code[after..end].iter().collect();
        let words: Vec<&str> = item
            .split(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';') {
            if let Some(p) = words.iter().position(|w| *w == "mod") {
                if let Some(name) = words.get(p + 1) {
                    test_mods.push(name.to_string());
                }
            }
        }
        for ch in code.iter_mut().take(end).skip(i) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = end;
    }
    test_mods
}

/// If an outer attribute `#[cfg(test)]` starts at `i`, the index just after it.
fn cfg_test_attribute(code: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let expect = |code: &[char], j: &mut usize, what: &str| -> bool {
        while *j < code.len() && code[*j].is_whitespace() {
            *j += 1;
        }
        let w: Vec<char> = what.chars().collect();
        if code.len() >= *j + w.len() && code[*j..*j + w.len()] == w[..] {
            *j += w.len();
            true
        } else {
            false
        }
    };
    for part in ["[", "cfg", "(", "test", ")", "]"] {
        if !expect(code, &mut j, part) {
            return None;
        }
    }
    Some(j)
}

/// The module path of a file under `src/` (`a/b.rs` and `a/b/mod.rs` are `a::b`); `None` for the crate
/// roots and for binaries, whose `crate` is another crate.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    if (parts.is_empty() && matches!(stem, "lib" | "main"))
        || parts.first().map(String::as_str) == Some("bin")
    {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

fn ident_at(code: &[char], i: usize) -> Option<(String, usize)> {
    let start = i;
    let mut j = i;
    while j < code.len() && (code[j].is_alphanumeric() || code[j] == '_') {
        j += 1;
    }
    (j > start).then(|| (code[start..j].iter().collect(), j))
}

fn skip_ws(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}

/// `::` (with optional spaces) at `i`: the index after it.
fn path_sep(code: &[char], i: usize) -> Option<usize> {
    let i = skip_ws(code, i);
    (code.get(i) == Some(&':') && code.get(i + 1) == Some(&':')).then(|| skip_ws(code, i + 2))
}

/// The first segments named by the path (or `{…}` group) starting at `i`, with their positions: `a`
/// for `a::x`, `a` and `b` for `{a::x, b}`.
fn first_segments(code: &[char], i: usize) -> Vec<(String, usize)> {
    if code.get(i) != Some(&'{') {
        return ident_at(code, i)
            .map(|(w, _)| vec![(w, i)])
            .unwrap_or_default();
    }
    let mut names = Vec::new();
    let (mut depth, mut j, mut at_item_start) = (0, i, true);
    while j < code.len() {
        match code[j] {
            '{' => {
                depth += 1;
                at_item_start = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => at_item_start = true,
            ch if ch.is_whitespace() => {}
            _ if at_item_start && depth == 1 => {
                if let Some((w, end)) = ident_at(code, j) {
                    names.push((w, j));
                    j = end;
                    at_item_start = false;
                    continue;
                }
                at_item_start = false;
            }
            _ => {}
        }
        j += 1;
    }
    names
}

/// The top-level modules `code` (of the module at `path`) names through `crate::` and root-reaching
/// `super::` paths, with the 1-based line of each.
fn named_modules(code: &[char], path: &[String]) -> Vec<(String, usize)> {
    let line_of = |pos: usize| 1 + code[..pos].iter().filter(|&&c| c == '\n').count();
    let mut found = Vec::new();
    // Inline `mod name { … }` blocks shift what `super` means: (name, brace depth inside it).
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < code.len() {
        let ch = code[i];
        if ch == '{' {
            depth += 1;
        }
        if ch == '}' {
            if inline.last().map(|(_, d)| *d) == Some(depth) {
                inline.pop();
            }
            depth -= 1;
        }
        let starts_word = i == 0 || !(code[i - 1].is_alphanumeric() || code[i - 1] == '_');
        if !starts_word || !(ch.is_alphabetic() || ch == '_') {
            i += 1;
            continue;
        }
        let Some((word, end)) = ident_at(code, i) else {
            i += 1;
            continue;
        };
        match word.as_str() {
            "mod" => {
                let j = skip_ws(code, end);
                if let Some((name, k)) = ident_at(code, j) {
                    let k = skip_ws(code, k);
                    if code.get(k) == Some(&'{') {
                        inline.push((name, depth + 1));
                    }
                }
            }
            "crate" => {
                if let Some(j) = path_sep(code, end) {
                    found.extend(
                        first_segments(code, j)
                            .into_iter()
                            .map(|(m, pos)| (m, line_of(pos))),
                    );
                }
            }
            "super" => {
                let mut here: Vec<String> = path
                    .iter()
                    .cloned()
                    .chain(inline.iter().map(|(n, _)| n.clone()))
                    .collect();
                let mut j = end;
                let mut climbed = true;
                loop {
                    here.pop();
                    let Some(k) = path_sep(code, j) else {
                        climbed = false;
                        break;
                    };
                    match ident_at(code, k) {
                        Some((w, e)) if w == "super" => j = e,
                        _ => {
                            j = k;
                            break;
                        }
                    }
                }
                if climbed && here.is_empty() {
                    found.extend(
                        first_segments(code, j)
                            .into_iter()
                            .map(|(m, pos)| (m, line_of(pos))),
                    );
                }
                i = j.max(end);
                continue;
            }
            _ => {}
        }
        i = end;
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Read the module graph of the crate whose sources are in `src`.
fn scan(src: &Path) -> Graph {
    let mut graph = Graph::default();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        if let Some(top) = module_path(rel).and_then(|p| p.first().cloned()) {
            graph.modules.insert(top);
        }
    }
    // Pass 1: the code of each module file, and which module paths are test-only.
    let mut code_of: Vec<(String, Vec<String>, Vec<char>)> = Vec::new();
    let mut test_only: Vec<Vec<String>> = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let Some(path) = module_path(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let mut code: Vec<char> = blank_non_code(&text).chars().collect();
        let inner: String = code.iter().collect::<String>().split_whitespace().collect();
        if inner.contains("#![cfg(test)]") {
            test_only.push(path.clone());
        }
        for m in blank_test_items(&mut code) {
            let mut p = path.clone();
            p.push(m);
            test_only.push(p);
        }
        code_of.push((rel.to_string_lossy().replace('\\', "/"), path, code));
    }
    // Pass 2: the edges of every module file that is not test code.
    for (file, path, code) in code_of {
        if test_only.iter().any(|t| path.starts_with(t)) {
            continue;
        }
        let from = &path[0];
        for (to, line) in named_modules(&code, &path) {
            if &to == from || !graph.modules.contains(&to) {
                continue;
            }
            graph
                .edges
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_default()
                .push(Site {
                    file: format!("src/{file}"),
                    line,
                });
        }
    }
    graph
}

// ---------------------------------------------------------------------------------------------------
// Judging the graph

/// Strongly connected components with more than one module (Tarjan).
fn cyclic_components(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.successors(v) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for m in &graph.modules {
        if !s.index.contains_key(m.as_str()) {
            visit(&mut s, m);
        }
    }
    s.out
}

/// The shortest path `from` ⇝ `to` inside `within`.
fn shortest_path(graph: &Graph, from: &str, to: &str, within: &BTreeSet<String>) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([from.to_string()]);
    let mut seen = BTreeSet::from([from.to_string()]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![v.clone()];
            let mut cur = v;
            while let Some(p) = prev.get(&cur) {
                path.push(p.clone());
                cur = p.clone();
            }
            path.reverse();
            return path;
        }
        for w in graph.successors(&v) {
            if within.contains(w) && seen.insert(w.clone()) {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    Vec::new()
}

/// Every cycle worth showing: for each edge on a cycle, the shortest cycle through it (each cycle once,
/// starting at its alphabetically first module). Each cycle lists its modules, first one repeated last.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for component in cyclic_components(graph) {
        for u in &component {
            for v in graph.successors(u).filter(|v| component.contains(*v)) {
                let back = shortest_path(graph, v, u, &component);
                let mut cycle: Vec<String> = std::iter::once(u.clone()).chain(back).collect();
                cycle.pop(); // `u` again
                let start = (0..cycle.len()).min_by_key(|&k| &cycle[k]).unwrap_or(0);
                cycle.rotate_left(start);
                cycle.push(cycle[0].clone());
                found.insert(cycle);
            }
        }
    }
    found.into_iter().collect()
}

fn sites_text(sites: &[Site]) -> String {
    const SHOWN: usize = 4;
    let mut text: Vec<String> = sites
        .iter()
        .take(SHOWN)
        .map(|s| format!("{}:{}", s.file, s.line))
        .collect();
    if sites.len() > SHOWN {
        text.push(format!("+{} more", sites.len() - SHOWN));
    }
    text.join(", ")
}

/// The cycle report: empty when the graph is a DAG.
fn cycle_report(graph: &Graph) -> String {
    let mut report = String::new();
    let components = cyclic_components(graph);
    for c in &components {
        report += &format!(
            "{} modules depend on each other in a circle: {}\n",
            c.len(),
            c.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    for cycle in cycles(graph) {
        report += &format!("cycle: {}\n", cycle.join(" -> "));
        for pair in cycle.windows(2) {
            report += &format!(
                "    {} -> {}  ({})\n",
                pair[0],
                pair[1],
                sites_text(graph.sites(&pair[0], &pair[1]))
            );
        }
    }
    report
}

/// The layer report: modules missing from `layers`, and every edge that does not point to a lower layer.
/// Empty when the graph follows the layers.
fn layer_report(graph: &Graph, layers: &[&[&str]]) -> String {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(r, names)| names.iter().map(move |n| (*n, r)))
        .collect();
    let mut report = String::new();
    for m in &graph.modules {
        if !rank.contains_key(m.as_str()) {
            report += &format!(
                "module `{m}` has no place in LAYERS (tests/layers.rs): add it to its layer\n"
            );
        }
    }
    for (from, targets) in &graph.edges {
        for (to, sites) in targets {
            let (Some(&rf), Some(&rt)) = (rank.get(from.as_str()), rank.get(to.as_str())) else {
                continue;
            };
            if rt > rf {
                report += &format!(
                    "{from} -> {to} points up (layer {rf} -> {rt})  ({})\n",
                    sites_text(sites)
                );
            }
        }
    }
    report
}

/// The crate's `src/`, or another tree's (`LAYERS_SRC=/path/to/src`, to look at a branch before merging).
fn crate_graph() -> Graph {
    let src = std::env::var_os("LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let graph = scan(&src);
    assert!(
        graph.modules.len() >= 10 && graph.edge_count() >= 10,
        "the scan found too little to be right: {graph:?}"
    );
    graph
}

fn edges_text(graph: &Graph) -> String {
    let mut text = String::new();
    for (from, targets) in &graph.edges {
        let names: Vec<&str> = targets.keys().map(String::as_str).collect();
        text += &format!("    {from} -> {}\n", names.join(", "));
    }
    text
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = crate_graph();
    let report = cycle_report(&graph);
    assert!(
        report.is_empty(),
        "the top-level modules of src/ must form a DAG (imports in #[cfg(test)] code do not count):\n{report}\nall edges:\n{}",
        edges_text(&graph)
    );
}

#[test]
fn imports_point_down_the_layers() {
    let graph = crate_graph();
    let report = layer_report(&graph, LAYERS);
    assert!(
        report.is_empty(),
        "a module may name only modules of lower layers (LAYERS in tests/layers.rs, lowest first):\n{report}"
    );
}

// ---------------------------------------------------------------------------------------------------
// The checker, on fake trees

fn fake_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    dir
}

/// a ↔ b through a `use` group in a submodule; everything that only looks like an import (comments,
/// strings, test code, a test-only module file) must not count.
fn cyclic_tree() -> tempfile::TempDir {
    fake_tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\nuse crate::a::X;\n"),
        (
            "a.rs",
            "//! Uses crate::c in a comment only.\nuse crate::b::Thing;\n/* crate::c::Y */\nconst S: &str = \"crate::c::Z\";\nconst R: &str = r#\"crate::c\"#;\nconst Q: char = '\"';\nconst E: u8 = b'\\'';\nfn f<'a>(x: &'a str) -> &'a str { x }\n",
        ),
        ("b/mod.rs", "pub mod inner;\npub struct Thing;\n"),
        ("b/inner.rs", "use crate::{\n    c,\n    a::{self, Item},\n};\n"),
        (
            "c.rs",
            "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::a;\n    #[test]\n    fn t() { crate::b::Thing; }\n}\n#[cfg(test)]\nmod more;\n",
        ),
        ("c/more.rs", "use crate::d;\n"),
        ("d/x/y.rs", "use super::super::super::c::f;\nuse super::z;\n"),
        ("d/mod.rs", "pub mod x;\n"),
    ])
}

#[test]
fn checker_reads_edges_and_skips_what_is_not_code() {
    let dir = cyclic_tree();
    let graph = scan(dir.path());
    let edges: Vec<(String, String, Vec<Site>)> = graph
        .edges
        .iter()
        .flat_map(|(f, t)| {
            t.iter()
                .map(move |(to, s)| (f.clone(), to.clone(), s.clone()))
        })
        .collect();
    let site = |file: &str, line| Site {
        file: file.into(),
        line,
    };
    assert_eq!(
        edges,
        vec![
            ("a".into(), "b".into(), vec![site("src/a.rs", 2)]),
            ("b".into(), "a".into(), vec![site("src/b/inner.rs", 3)]),
            ("b".into(), "c".into(), vec![site("src/b/inner.rs", 2)]),
            ("d".into(), "c".into(), vec![site("src/d/x/y.rs", 1)]),
        ]
    );
}

#[test]
fn checker_finds_the_cycle_and_says_where() {
    let dir = cyclic_tree();
    let graph = scan(dir.path());
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "a"]]);
    let report = cycle_report(&graph);
    assert!(report.contains("cycle: a -> b -> a\n"), "{report}");
    assert!(report.contains("a -> b  (src/a.rs:2)"), "{report}");
    assert!(report.contains("b -> a  (src/b/inner.rs:3)"), "{report}");
}

#[test]
fn checker_lists_every_cycle_of_a_component() {
    // x -> y -> x and x -> z -> x: one component, two cycles, both shown.
    let dir = fake_tree(&[
        ("x.rs", "use crate::y;\nuse crate::z;\n"),
        ("y.rs", "use crate::x;\n"),
        ("z.rs", "use crate::x;\n"),
    ]);
    let graph = scan(dir.path());
    assert_eq!(
        cycles(&graph),
        vec![vec!["x", "y", "x"], vec!["x", "z", "x"]]
    );
}

#[test]
fn checker_passes_a_dag_and_checks_layers() {
    let dir = fake_tree(&[
        ("a.rs", "pub struct X;\n"),
        ("b.rs", "use crate::a::X;\n"),
        ("c.rs", "use crate::{a, b};\n"),
    ]);
    let graph = scan(dir.path());
    assert!(cycle_report(&graph).is_empty());
    assert_eq!(layer_report(&graph, &[&["a"], &["b"], &["c"]]), "");
    let upside_down = layer_report(&graph, &[&["c"], &["b"], &["a"]]);
    assert!(
        upside_down.contains("b -> a points up (layer 1 -> 2)  (src/b.rs:1)"),
        "{upside_down}"
    );
    assert!(upside_down.contains("c -> a points up"), "{upside_down}");
    assert!(upside_down.contains("c -> b points up"), "{upside_down}");
    let missing = layer_report(&graph, &[&["a"], &["b"]]);
    assert!(
        missing.contains("module `c` has no place in LAYERS"),
        "{missing}"
    );
}
