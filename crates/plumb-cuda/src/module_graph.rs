//! The crate's module graph, read from its own sources (src/*.rs but the root, lib.rs, which
//! only declares and re-exports): every `crate::X` path names a module file, the edges have no
//! cycle, and the leaf (src/launch.rs) imports nothing of the crate but the error types.

use std::collections::{BTreeMap, BTreeSet};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `src` with comments and the insides of string and char literals blanked, so that a doc
/// comment or a message naming a path is not an edge.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_len(&c[i..], out.chars().next_back()) {
            i += len;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (c.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A char literal ('x' or '\n'); a lifetime ('a) has no closing quote.
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The length of the raw string literal (`r"..."`, `r#"..."#`) `c` starts with, if it does;
/// `before` is the character ahead of it (an identifier's `r` is not a literal).
fn raw_string_len(c: &[char], before: Option<char>) -> Option<usize> {
    if c.first() != Some(&'r') || before.is_some_and(|b| b.is_alphanumeric() || b == '_') {
        return None;
    }
    let hashes = c[1..].iter().take_while(|&&ch| ch == '#').count();
    if c.get(1 + hashes) != Some(&'"') {
        return None;
    }
    let body = 2 + hashes;
    let close = (body..c.len()).find(|&j| {
        c[j] == '"' && c.len() - j > hashes && c[j + 1..=j + hashes].iter().all(|&h| h == '#')
    })?;
    Some(close + 1 + hashes)
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item of a `{a, b::C, d::{E, F}}` group.
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let (mut depth, mut start) = (0, 1);
    for (i, ch) in s.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                heads.push(ident(s[start..i].trim_start()));
                start = i + 1;
                if ch == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads.into_iter().filter(|h| !h.is_empty()).collect()
}

/// The modules `src` names through `crate::` paths: `use crate::a::B`, `use crate::{b, c::D}`
/// and paths in expressions (`crate::d::f()`).
fn crate_paths(src: &str) -> BTreeSet<String> {
    let code = code_only(src);
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|ch| ch.is_alphanumeric() || ch == '_') {
            continue; // e.g. `plumb_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        if rest.starts_with('{') {
            found.extend(group_heads(rest).into_iter().map(String::from));
        } else {
            found.insert(ident(rest).to_string());
        }
    }
    found
}

/// Module name -> the modules it names, for every src/*.rs but lib.rs.
fn module_graph() -> Graph {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut g = Graph::new();
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("listing src/").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" {
            let src = std::fs::read_to_string(&path).expect("reading a module");
            let mut edges = crate_paths(&src);
            edges.remove(name);
            g.insert(name.to_string(), edges);
        }
    }
    g
}

/// A cycle of `g` as the modules around it (the first repeated at the end), if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit<'a>(
        g: &'a Graph,
        m: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == m) {
            let mut cycle: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

fn graph(edges: &[(&str, &[&str])]) -> Graph {
    edges
        .iter()
        .map(|(m, to)| (m.to_string(), to.iter().map(|t| t.to_string()).collect()))
        .collect()
}

#[test]
fn paths_are_read_in_every_form_and_not_from_comments_or_strings() {
    let src = r#"
        use crate::a::X;
        pub(crate) use crate::{b, c::{D, E}, f::G};
        use crate::g;
        let v = crate::d::h() + '"' as u32; // crate::z::Y in a comment
        let s = "crate::y::Z in a message";
        /* crate::w::V in a block comment */
        fn lt<'a>(x: &'a str) -> &'a str { crate::e::k(x) }
        let t = plumb_crate::q;
    "#;
    let found: Vec<String> = crate_paths(src).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "d", "e", "f", "g"]);
}

#[test]
fn cycles_are_found_and_layers_pass() {
    let ring = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]);
    assert_eq!(find_cycle(&ring).map(|c| c.len()), Some(4));
    let diamond = graph(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[]), ("d", &["a"])]);
    assert_eq!(find_cycle(&diamond), None);
    assert!(find_cycle(&graph(&[("a", &["a"])])).is_some());
}

#[test]
fn the_crate_modules_form_layers() {
    let g = module_graph();
    for (m, to) in &g {
        for t in to {
            assert!(
                g.contains_key(t),
                "src/{m}.rs names crate::{t}, which is not a module file (import from the module \
                 that defines it, not from the root)"
            );
        }
    }
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "the modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
    let leaf: Vec<&String> = g["launch"].iter().collect();
    assert_eq!(
        leaf,
        ["error"],
        "src/launch.rs must import only the error types"
    );
    // The graph was read: the backend struct uses the leaf, and the leaf is used widely.
    assert!(g["device"].contains("launch"));
    assert!(g.values().filter(|to| to.contains("launch")).count() >= 10);
}
