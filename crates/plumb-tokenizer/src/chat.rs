//! Chat templates: the model's Jinja template rendered with minijinja the way Hugging Face
//! `apply_chat_template` does (trim_blocks, lstrip_blocks, Python string methods,
//! `raise_exception`, `strftime_now`, Python-style `tojson`).

use std::io;

use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{context, Environment, Error, ErrorKind};
use plumb_gguf::Value;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TokenizerError};
use crate::gguf::{Meta, KEY_BOS, KEY_CHAT_TEMPLATE, KEY_EOS, KEY_TOKENS};

const NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// ChatML, used when a model has no template of its own.
    pub const CHATML: &'static str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    /// Gemma's turn format, used for a model with `<start_of_turn>` in its vocabulary and no
    /// template of its own: BOS, then per turn `<start_of_turn>ROLE\n` (`model` for the
    /// assistant), the trimmed content, `<end_of_turn>\n`; a system message becomes the
    /// first user turn's opening paragraph; turns must alternate, starting with the user.
    pub const GEMMA: &'static str = "{{ bos_token }}\
{% set has_system = messages and messages[0]['role'] == 'system' %}\
{% set system = messages[0]['content'] | trim + '\n\n' if has_system else '' %}\
{% for m in (messages[1:] if has_system else messages) %}\
{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}\
{{ raise_exception('Gemma conversations alternate user and assistant turns, starting with the user') }}\
{% endif %}\
{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n' }}\
{{ (system if loop.first else '') + m['content'] | trim + '<end_of_turn>\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

    /// The template of a model without one of its own: [`Self::GEMMA`] when its vocabulary
    /// has Gemma's turn marker, else [`Self::CHATML`].
    pub fn default_source<'t>(mut tokens: impl Iterator<Item = &'t str>) -> &'static str {
        if tokens.any(|t| t == "<start_of_turn>") {
            Self::GEMMA
        } else {
            Self::CHATML
        }
    }

    /// Compiles `source`; `bos_token` / `eos_token` are the texts the template sees.
    pub fn new(source: impl Into<String>, bos_token: &str, eos_token: &str) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.clone()).map_err(|e| {
            TokenizerError::ChatTemplate(format!("the template does not compile: {e:#}"))
        })?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The default ChatML template.
    pub fn chatml() -> Self {
        // CHATML is a constant known to compile.
        match Self::new(Self::CHATML, "", "") {
            Ok(t) => t,
            Err(e) => unreachable!("built-in ChatML template: {e}"),
        }
    }

    /// `tokenizer.chat_template` ([`Self::default_source`] when absent) with BOS/EOS text
    /// from the vocabulary.
    pub fn from_gguf_metadata<'a>(get: impl Fn(&str) -> Option<&'a Value>) -> Result<Self> {
        let m = Meta(&get);
        let tokens = get(KEY_TOKENS)
            .and_then(Value::as_array)
            .unwrap_or_default();
        let text = |key: &str| -> Result<String> {
            let id = m.id(key)?;
            Ok(id
                .and_then(|i| tokens.get(i as usize))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string())
        };
        let source = match m.str(KEY_CHAT_TEMPLATE)? {
            Some(s) => s,
            None => Self::default_source(tokens.iter().filter_map(Value::as_str)),
        };
        Self::new(source, &text(KEY_BOS)?, &text(KEY_EOS)?)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the opening of an
    /// assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`render`](Self::render) for messages of any serializable shape (Hugging Face's:
    /// assistant `tool_calls`, `tool` messages with `tool_call_id`), with `tools` (a list of
    /// `{"type": "function", "function": {...}}`) given to the template as `tools`; without
    /// them `tools` is undefined, as for [`render`](Self::render).
    pub fn render_with_tools<M: Serialize>(
        &self,
        messages: &[M],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| TokenizerError::ChatTemplate(format!("{e:#}")))?;
        let base = context! {
            messages => JValue::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        let ctx = match tools {
            Some(t) => context! { tools => JValue::from_serialize(t), ..base },
            None => base,
        };
        tmpl.render(ctx)
            .map_err(|e| TokenizerError::ChatTemplate(format!("rendering failed: {e:#}")))
    }
}

fn raise_exception(msg: String) -> std::result::Result<JValue, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("the template raised an exception: {msg}"),
    ))
}

fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, secs)
}

/// Python's `json.dumps` separators: `", "` and `": "`.
struct PyCompact;

impl serde_json::ser::Formatter for PyCompact {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `tojson` as in HF's environment: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: JValue, kwargs: Kwargs) -> std::result::Result<JValue, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut buf = Vec::new();
    let res = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            serde::Serialize::serialize(
                &value,
                &mut serde_json::Serializer::with_formatter(&mut buf, fmt),
            )
        }
        None => serde::Serialize::serialize(
            &value,
            &mut serde_json::Serializer::with_formatter(&mut buf, PyCompact),
        ),
    };
    res.map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(JValue::from_safe_string(
        String::from_utf8_lossy(&buf).into_owned(),
    ))
}

/// A small UTC `strftime` (`%Y %m %d %e %H %I %M %S %p %y %j %b %B %a %A %%`).
pub(crate) fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let wday = (days + 4).rem_euclid(7) as usize;
    let month = MONTHS[(m - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('I') => out.push_str(&format!("{:02}", (h + 11) % 12 + 1)),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(month),
            Some('b') => out.push_str(&month[..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(
            strftime("%d %b %Y, %A %j %I%p %%", t),
            "29 Feb 2024, Thursday 060 01PM %"
        );
        assert_eq!(strftime("%d %B %Y", 0), "01 January 1970");
    }

    #[test]
    fn tojson_is_python_style() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}", "", "").unwrap();
        let out = t.env.get_template(NAME).unwrap();
        let s = out
            .render(context! { x => context!{ a => vec![1, 2], b => "<é>" } })
            .unwrap();
        assert_eq!(s, "{\"a\": [1, 2], \"b\": \"<é>\"}|{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"<é>\"\n}");
    }

    #[test]
    fn tools_reach_the_template_only_when_given() {
        let src = "{% if tools is defined %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}\
                   {% else %}-{% endif %}{% for m in messages %}{{ m.role }}\
                   {% for c in m.tool_calls %}:{{ c.function.arguments.city }}{% endfor %}{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let tools = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        let msgs = [serde_json::json!({"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"city": "Oslo"}}}]})];
        assert_eq!(
            t.render_with_tools(&msgs, Some(&tools), false).unwrap(),
            "[f]assistant:Oslo"
        );
        assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "-user");
    }
}
