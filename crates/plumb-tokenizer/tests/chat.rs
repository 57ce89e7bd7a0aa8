//! Chat template rendering features (HF compatibility).

use plumb_tokenizer::{ChatMessage, ChatTemplate, TokenizerError};

fn render(src: &str, msgs: &[ChatMessage], gen: bool) -> Result<String, TokenizerError> {
    ChatTemplate::new(src, "<s>", "</s>")?.render(msgs, gen)
}

#[test]
fn default_chatml() {
    let t = ChatTemplate::chatml();
    let msgs = [ChatMessage::system("Be brief."), ChatMessage::user("Hi")];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn trim_and_lstrip_blocks_like_hf() {
    let src = "{{ bos_token }}\n{% for m in messages %}\n    {% if m.role == 'user' %}\n[U]{{ m.content }}\n    {% else %}\n[A]{{ m.content }}{{ eos_token }}\n    {% endif %}\n{% endfor %}\n";
    let msgs = [ChatMessage::user("q"), ChatMessage::assistant("a")];
    assert_eq!(render(src, &msgs, false).unwrap(), "<s>\n[U]q\n[A]a</s>\n");
}

#[test]
fn python_string_methods() {
    let src = "{% for m in messages %}{{ m['content'].strip().upper() }}|{{ m.role.startswith('us') }}|{{ m.content.split(',') | length }}|{{ m.content.replace('a', 'o').lstrip() }}{% endfor %}";
    let out = render(src, &[ChatMessage::user("  a,b  ")], false).unwrap();
    assert_eq!(out, "A,B|True|2|o,b  "); // Python renders True
}

#[test]
fn raise_exception_reports_the_message() {
    let src = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversations must start with a system message') }}{% endif %}ok";
    let e = render(src, &[ChatMessage::user("x")], false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TokenizerError::ChatTemplate(_)));
    assert!(
        msg.contains("Conversations must start with a system message"),
        "{msg}"
    );
    assert_eq!(
        render(src, &[ChatMessage::system("x")], false).unwrap(),
        "ok"
    );
}

#[test]
fn strftime_now_and_namespace() {
    let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} {{ strftime_now('%Y') | length }}";
    assert_eq!(
        render(
            src,
            &[ChatMessage::user("a"), ChatMessage::user("b")],
            false
        )
        .unwrap(),
        "2 4"
    );
}

#[test]
fn broken_templates_fail_clearly() {
    let e = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
    assert!(e.to_string().contains("does not compile"), "{e}");
    let e = render(
        "{{ messages[0].content + 1 }}",
        &[ChatMessage::user("x")],
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("rendering failed"), "{e}");
}
