//! Tool calls as the output streams: after each piece of text the output so far is read
//! again ([`parse::locate`]) and what it adds over what was sent goes out as OpenAI deltas —
//! content up to where a call may begin, then per call its header (`index`, `id`, `type`,
//! `function.name`) once the name is complete, then its arguments in fragments. At the end
//! the whole output is read as the non-streaming response reads it, so the deltas add up to
//! that response. The deltas are typed ([`Delta`]); [`Delta::to_openai`] writes a chat
//! delta, and the translated APIs write their own events from them.

use serde_json::{json, Value};

use super::parse::{self, Call};
use super::{call_id, Family};

/// What a piece of output adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Message content.
    Content(String),
    /// Call `index` begins: its id and the function's name.
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments (JSON text).
    Arguments { index: usize, fragment: String },
}

impl Delta {
    /// The chat-completions `delta` object.
    pub fn to_openai(&self) -> Value {
        match self {
            Delta::Content(c) => json!({"content": c}),
            Delta::CallStart { index, id, name } => json!({"tool_calls": [{
                "index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""},
            }]}),
            Delta::Arguments { index, fragment } => {
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
            }
        }
    }
}

/// Per choice.
pub struct ToolStream {
    family: Family,
    request: u64,
    choice: usize,
    text: String,
    /// Bytes of `text` sent as content.
    content_sent: usize,
    calls: Vec<Sent>,
}

#[derive(Default)]
struct Sent {
    header: bool,
    /// Bytes of the arguments sent.
    arguments: usize,
}

impl ToolStream {
    pub fn new(family: Family, request: u64, choice: usize) -> Self {
        ToolStream {
            family,
            request,
            choice,
            text: String::new(),
            content_sent: 0,
            calls: Vec::new(),
        }
    }

    /// The deltas `piece` of output text adds.
    pub fn push(&mut self, piece: &str) -> Vec<Delta> {
        self.text.push_str(piece);
        let found = parse::locate(self.family, &self.text);
        // Trailing whitespace waits: it is dropped if a call follows.
        let safe = self.text[..found.content_end.min(found.hold_from)]
            .trim_end()
            .len();
        let mut out = Vec::new();
        self.content_up_to(safe, &mut out);
        for (
            i,
            Call {
                name, arguments, ..
            },
        ) in found.calls.iter().enumerate()
        {
            if let Some(name) = name {
                self.call(i, name, arguments, &mut out);
            }
        }
        out
    }

    /// The last deltas, and whether the output holds calls.
    pub fn finish(&mut self) -> (Vec<Delta>, bool) {
        let (content, calls) = parse::finish(self.family, &self.text);
        let mut out = Vec::new();
        let content_len = content.len();
        self.content_up_to(
            if calls.is_empty() {
                self.text.len()
            } else {
                content_len
            },
            &mut out,
        );
        for (i, (name, arguments)) in calls.iter().enumerate() {
            self.call(i, name, arguments, &mut out);
        }
        (out, !calls.is_empty())
    }

    fn content_up_to(&mut self, end: usize, out: &mut Vec<Delta>) {
        if end > self.content_sent {
            out.push(Delta::Content(
                self.text[self.content_sent..end].to_string(),
            ));
            self.content_sent = end;
        }
    }

    fn call(&mut self, index: usize, name: &str, arguments: &str, out: &mut Vec<Delta>) {
        while self.calls.len() <= index {
            self.calls.push(Sent::default());
        }
        let sent = &mut self.calls[index];
        if !sent.header {
            out.push(Delta::CallStart {
                index,
                id: call_id(self.request, self.choice, index),
                name: name.to_string(),
            });
            sent.header = true;
        }
        if let Some(more) = arguments.get(sent.arguments..).filter(|m| !m.is_empty()) {
            out.push(Delta::Arguments {
                index,
                fragment: more.to_string(),
            });
            sent.arguments = arguments.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::message;

    /// Streams `text` in pieces of `step` bytes; returns the content, the calls rebuilt from
    /// the deltas (id, name, arguments) and whether any call was made.
    fn replay(
        family: Family,
        text: &str,
        step: usize,
    ) -> (String, Vec<(String, String, String)>, bool) {
        let mut s = ToolStream::new(family, 3, 1);
        let mut deltas = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            deltas.extend(s.push(&piece.iter().collect::<String>()));
        }
        let (last, called) = s.finish();
        deltas.extend(last);
        let mut content = String::new();
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for d in deltas.iter().map(Delta::to_openai) {
            content.push_str(d["content"].as_str().unwrap_or(""));
            for c in d["tool_calls"].as_array().into_iter().flatten() {
                let i = c["index"].as_u64().expect("index") as usize;
                if let Some(id) = c["id"].as_str() {
                    assert_eq!(i, calls.len(), "headers in order");
                    calls.push((
                        id.into(),
                        c["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                calls[i]
                    .2
                    .push_str(c["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        (content, calls, called)
    }

    #[test]
    fn deltas_add_up_to_the_whole_response_at_any_piece_size() {
        let outputs = [
            (Family::Hermes, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"),
            (Family::Hermes, "No tools needed < 3 {ok}"),
            (Family::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"),
            (Family::Mistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]"),
            (Family::Json, "  [{\"name\": \"a\", \"arguments\": \"{\\\"x\\\": 1}\"}]"),
            (Family::Json, "{\"answer\": 42}"),
        ];
        for (family, text) in outputs {
            let (whole, _) = message(family, text, 3, 1);
            for step in [1, 2, 5, 1000] {
                let (content, calls, called) = replay(family, text, step);
                let want_content = whole["content"].as_str().unwrap_or("");
                assert_eq!(content, want_content, "{family:?} step {step}: {text}");
                let want: Vec<(String, String, String)> = whole["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let f = &c["function"];
                        let s = |v: &Value| v.as_str().unwrap().to_string();
                        (s(&c["id"]), s(&f["name"]), s(&f["arguments"]))
                    })
                    .collect();
                assert_eq!(calls, want, "{family:?} step {step}: {text}");
                assert_eq!(called, !want.is_empty());
            }
        }
    }

    #[test]
    fn arguments_stream_before_the_call_closes() {
        let mut s = ToolStream::new(Family::Hermes, 1, 0);
        assert!(s.push("<tool_ca").is_empty(), "a marker prefix waits");
        let d: Vec<Value> = s
            .push("ll>\n{\"name\": \"f\", \"arguments\": {\"q\": \"ab")
            .iter()
            .map(Delta::to_openai)
            .collect();
        assert_eq!(d[0]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(
            d[1]["tool_calls"][0]["function"]["arguments"],
            "{\"q\": \"ab"
        );
        let d = s.push("c\"}}\n</tool_call>");
        assert_eq!(
            d,
            vec![Delta::Arguments {
                index: 0,
                fragment: "c\"}".into()
            }]
        );
        assert_eq!(
            d[0].to_openai(),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "c\"}"}}]})
        );
        assert_eq!(s.finish(), (vec![], true));
    }
}
