//! Tool calls in model output, by family, from a prefix of the output (while it streams) or
//! the whole of it. One scanner reads a call object `{"name": ..., "arguments": ...}` (Llama
//! writes `"parameters"`) and says how far it got: the name once its string is closed, the
//! arguments' JSON text as far as it goes. Text before the first call is the message content;
//! text after the calls is dropped.

use super::family::{Family, HERMES_CLOSE, HERMES_OPEN, MISTRAL_ARGS, MISTRAL_CALLS, PYTHON_TAG};

/// A tool call, possibly unfinished.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Call {
    /// Known once its string is complete.
    pub name: Option<String>,
    /// The arguments' JSON text so far (an object grows as it streams; a string-valued
    /// argument, decoded, appears only once complete).
    pub arguments: String,
    /// The call's syntax is closed.
    pub complete: bool,
}

/// What a prefix of the output holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Located {
    /// Where the first call's syntax begins (the text's length when none has begun).
    pub content_end: usize,
    /// Text from here on may begin a call: content past it waits for more text.
    pub hold_from: usize,
    pub calls: Vec<Call>,
}

/// Reads the calls of an output whose first marker is at the given byte.
type Reader = fn(&str, usize) -> Vec<Call>;

/// Where the calls are in `text`. Each family's calls start at its marker; without one, an
/// output that is itself a call object counts too (small models often leave the marker out).
pub fn locate(family: Family, text: &str) -> Located {
    let (marker, read): (&str, Reader) = match family {
        Family::Hermes => (HERMES_OPEN, hermes),
        Family::Mistral => (MISTRAL_CALLS, mistral),
        Family::Llama3 => (PYTHON_TAG, llama3),
        Family::Json => return bare(text, true),
    };
    match text.find(marker) {
        Some(first) => Located {
            content_end: first,
            hold_from: first,
            calls: read(text, first),
        },
        None => {
            let mut found = bare(text, false);
            if found.calls.is_empty() && found.content_end == text.len() {
                found.hold_from = found.hold_from.min(marker_hold(text, marker));
            }
            found
        }
    }
}

/// The content and the complete, named calls of a whole output. Without any such call all
/// the text is content.
pub fn finish(family: Family, text: &str) -> (String, Vec<(String, String)>) {
    let found = locate(family, text);
    let calls: Vec<(String, String)> = found
        .calls
        .into_iter()
        .filter(|c| c.complete)
        .filter_map(|c| {
            let args = if c.arguments.is_empty() {
                "{}".to_string()
            } else {
                c.arguments
            };
            c.name.map(|n| (n, args))
        })
        .collect();
    if calls.is_empty() {
        (text.to_string(), calls)
    } else {
        (text[..found.content_end].trim_end().to_string(), calls)
    }
}

/// `<tool_call>{...}</tool_call>` blocks from the first one at `first`.
fn hermes(text: &str, first: usize) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut at = first;
    while let Some(open) = text[at..].find(HERMES_OPEN).map(|o| at + o) {
        let body = skip_ws(text, open + HERMES_OPEN.len());
        let Some((call, end)) = scan_call(text, body) else {
            break;
        };
        calls.push(call);
        let Some(end) = end else { break };
        at = skip_ws(text, end);
        match text[at..].strip_prefix(HERMES_CLOSE) {
            Some(_) => at += HERMES_CLOSE.len(),
            None => break,
        }
    }
    calls
}

/// `[TOOL_CALLS]` then a JSON list of calls (or one call), or `name[ARGS]{...}` per call.
fn mistral(text: &str, first: usize) -> Vec<Call> {
    let mut at = skip_ws(text, first + MISTRAL_CALLS.len());
    match text.as_bytes().get(at) {
        Some(b'[' | b'{') => sequence(text, &mut at, b','),
        Some(_) => named_args(text, at),
        None => Vec::new(),
    }
}

/// Mistral's newer form: `[TOOL_CALLS]name[ARGS]{...}`, repeated.
fn named_args(text: &str, mut at: usize) -> Vec<Call> {
    let mut calls = Vec::new();
    while let Some(sep) = text[at..].find(MISTRAL_ARGS) {
        let name = text[at..at + sep].trim().to_string();
        let start = at + sep + MISTRAL_ARGS.len();
        let (arguments, end) = match scan_value(text.as_bytes(), start) {
            Scan::Done(end)
                if serde_json::from_str::<serde_json::Value>(&text[start..end]).is_ok() =>
            {
                (text[start..end].to_string(), Some(end))
            }
            Scan::More => (text[start..].to_string(), None),
            Scan::Done(_) | Scan::Bad => break,
        };
        calls.push(Call {
            name: Some(name),
            arguments,
            complete: end.is_some(),
        });
        let Some(end) = end else { break };
        match text[end..].find(MISTRAL_CALLS) {
            Some(next) => at = end + next + MISTRAL_CALLS.len(),
            None => break,
        }
    }
    calls
}

/// Llama 3.x after `<|python_tag|>`: calls separated by `;`.
fn llama3(text: &str, tag: usize) -> Vec<Call> {
    let mut at = skip_ws(text, tag + PYTHON_TAG.len());
    sequence(text, &mut at, b';')
}

/// An output that is itself a call (`{...}`; Llama's `{"name": ..., "parameters": ...}`, `;`
/// between several) or, with `lists`, a JSON list of calls.
fn bare(text: &str, lists: bool) -> Located {
    let start = skip_ws(text, 0);
    match text.as_bytes().get(start) {
        // Only whitespace so far: a call may still begin.
        None => Located {
            content_end: text.len(),
            hold_from: 0,
            calls: Vec::new(),
        },
        Some(&c) if c == b'{' || (lists && c == b'[') => {
            let mut at = start;
            Located {
                content_end: start,
                hold_from: start,
                calls: sequence(text, &mut at, b';'),
            }
        }
        Some(_) => Located {
            content_end: text.len(),
            hold_from: text.len(),
            calls: Vec::new(),
        },
    }
}

/// Calls from `at`: one object, or a `[...]` list of them; objects not in a list may repeat
/// with `sep` between them.
fn sequence(text: &str, at: &mut usize, sep: u8) -> Vec<Call> {
    let b = text.as_bytes();
    let listed = b.get(*at) == Some(&b'[');
    let sep = if listed {
        *at = skip_ws(text, *at + 1);
        b','
    } else {
        sep
    };
    let mut calls = Vec::new();
    while b.get(*at) == Some(&b'{') {
        let Some((call, end)) = scan_call(text, *at) else {
            break;
        };
        calls.push(call);
        let Some(end) = end else { break };
        *at = skip_ws(text, end);
        if b.get(*at) != Some(&sep) {
            break;
        }
        *at = skip_ws(text, *at + 1);
    }
    calls
}

/// Where the longest tail of `text` that is a proper prefix of `marker` begins (the text's
/// length when none is).
fn marker_hold(text: &str, marker: &str) -> usize {
    (1..marker.len())
        .rev()
        .find(|&n| text.ends_with(&marker[..n]))
        .map_or(text.len(), |n| text.len() - n)
}

fn skip_ws(text: &str, mut at: usize) -> usize {
    let b = text.as_bytes();
    while b.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// How a JSON value starting at some byte ends.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// It ends before this byte.
    Done(usize),
    /// The text ends inside it.
    More,
    /// It is not JSON.
    Bad,
}

fn scan_string(b: &[u8], at: usize) -> Scan {
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Scan::Done(i + 1),
            _ => i += 1,
        }
    }
    Scan::More
}

/// Finds the end of the value at `at`. Nesting and strings are followed; the structure inside
/// is checked later, by parsing the whole call.
fn scan_value(b: &[u8], at: usize) -> Scan {
    match b.get(at) {
        None => Scan::More,
        Some(b'"') => scan_string(b, at),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = at;
            while i < b.len() {
                match b[i] {
                    b'"' => match scan_string(b, i) {
                        Scan::Done(end) => {
                            i = end;
                            continue;
                        }
                        other => return other,
                    },
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Scan::Done(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Scan::More
        }
        Some(_) => {
            let end = (at..b.len())
                .find(|&i| matches!(b[i], b',' | b'}' | b']' | b';') || b[i].is_ascii_whitespace());
            match end {
                Some(end) if end > at => Scan::Done(end),
                Some(_) => Scan::Bad,
                None => Scan::More,
            }
        }
    }
}

/// Reads the call object at `at` (a `{`): the call so far and, when it is closed and parses
/// as JSON, the byte after it. `None`: not a call object.
fn scan_call(text: &str, at: usize) -> Option<(Call, Option<usize>)> {
    let b = text.as_bytes();
    let mut call = Call::default();
    let mut i = at + 1;
    loop {
        i = skip_ws(text, i);
        match b.get(i) {
            None => return Some((call, None)),
            Some(b'}') => {
                serde_json::from_str::<serde_json::Value>(&text[at..=i]).ok()?;
                call.complete = true;
                return Some((call, Some(i + 1)));
            }
            Some(b'"') => {}
            Some(_) => return None,
        }
        let key_end = match scan_string(b, i) {
            Scan::Done(end) => end,
            _ => return Some((call, None)),
        };
        let key: String = serde_json::from_str(&text[i..key_end]).ok()?;
        i = skip_ws(text, key_end);
        match b.get(i) {
            None => return Some((call, None)),
            Some(b':') => i = skip_ws(text, i + 1),
            Some(_) => return None,
        }
        let end = match scan_value(b, i) {
            Scan::Done(end) => end,
            Scan::Bad => return None,
            Scan::More => {
                let raw = b.get(i).is_some_and(|&c| c != b'"');
                if raw && matches!(key.as_str(), "arguments" | "parameters") {
                    call.arguments = text[i..].to_string();
                }
                return Some((call, None));
            }
        };
        match key.as_str() {
            "name" => call.name = Some(serde_json::from_str(&text[i..end]).ok()?),
            "arguments" | "parameters" => {
                call.arguments = match b[i] {
                    b'"' => serde_json::from_str(&text[i..end]).ok()?,
                    _ => text[i..end].to_string(),
                }
            }
            _ => {}
        }
        i = skip_ws(text, end);
        match b.get(i) {
            None => return Some((call, None)),
            Some(b',') => i += 1,
            Some(b'}') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests;
