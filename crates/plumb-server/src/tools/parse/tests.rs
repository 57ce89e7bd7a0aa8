//! Each family's parser on outputs written the way those models write them.

use super::*;

/// The complete calls of a whole output, and its content.
fn calls(family: Family, text: &str) -> (String, Vec<(String, String)>) {
    finish(family, text)
}

fn call(name: &str, args: &str) -> (String, String) {
    (name.to_string(), args.to_string())
}

#[test]
fn hermes_and_qwen_blocks() {
    let qwen = "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"San Francisco, CA, USA\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_temperature_date\", \"arguments\": {\"location\": \"San Francisco, CA, USA\", \"date\": \"2024-10-01\"}}\n</tool_call>";
    assert_eq!(
        calls(Family::Hermes, qwen),
        (
            String::new(),
            vec![
                call(
                    "get_current_temperature",
                    "{\"location\": \"San Francisco, CA, USA\"}"
                ),
                call(
                    "get_temperature_date",
                    "{\"location\": \"San Francisco, CA, USA\", \"date\": \"2024-10-01\"}"
                ),
            ]
        )
    );
    // Hermes 2 Pro puts the arguments first; text before the block is content.
    let hermes = "I will look it up.\n<tool_call>\n{\"arguments\": {\"symbol\": \"TSLA\"}, \"name\": \"get_stock_fundamentals\"}\n</tool_call>";
    assert_eq!(
        calls(Family::Hermes, hermes),
        (
            "I will look it up.".into(),
            vec![call("get_stock_fundamentals", "{\"symbol\": \"TSLA\"}")]
        )
    );
    // Braces, quotes and escapes inside strings do not end the arguments.
    let tricky =
        "<tool_call>{\"name\": \"echo\", \"arguments\": {\"s\": \"a } \\\" {\"}}</tool_call>";
    assert_eq!(
        calls(Family::Hermes, tricky).1,
        vec![call("echo", "{\"s\": \"a } \\\" {\"}")]
    );
}

#[test]
fn llama3_json_and_python_tag() {
    let json = "{\"name\": \"get_current_conditions\", \"parameters\": {\"location\": \"San Francisco, CA\", \"unit\": \"Fahrenheit\"}}";
    assert_eq!(
        calls(Family::Llama3, json).1,
        vec![call(
            "get_current_conditions",
            "{\"location\": \"San Francisco, CA\", \"unit\": \"Fahrenheit\"}"
        )]
    );
    let tagged = "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Tokyo\"}}; {\"name\": \"get_time\", \"parameters\": {\"zone\": \"JST\"}}";
    assert_eq!(
        calls(Family::Llama3, tagged),
        (
            String::new(),
            vec![
                call("get_weather", "{\"city\": \"Tokyo\"}"),
                call("get_time", "{\"zone\": \"JST\"}")
            ]
        )
    );
    let prose = "The weather in Tokyo is sunny.";
    assert_eq!(calls(Family::Llama3, prose), (prose.into(), vec![]));
}

#[test]
fn mistral_lists_and_named_args() {
    let v3 = "[TOOL_CALLS] [{\"name\": \"get_current_weather\", \"arguments\": {\"location\": \"Paris, France\", \"format\": \"celsius\"}}, {\"name\": \"get_time\", \"arguments\": {}}]";
    assert_eq!(
        calls(Family::Mistral, v3).1,
        vec![
            call(
                "get_current_weather",
                "{\"location\": \"Paris, France\", \"format\": \"celsius\"}"
            ),
            call("get_time", "{}")
        ]
    );
    let v11 = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[ARGS]{}";
    assert_eq!(
        calls(Family::Mistral, v11).1,
        vec![
            call("get_weather", "{\"city\": \"Paris\"}"),
            call("get_time", "{}")
        ]
    );
}

#[test]
fn generic_json_objects_lists_and_string_arguments() {
    let one = "{\"name\": \"search\", \"arguments\": {\"q\": \"rust\"}}";
    assert_eq!(
        calls(Family::Json, one).1,
        vec![call("search", "{\"q\": \"rust\"}")]
    );
    // OpenAI-style string arguments are decoded; a missing argument object is `{}`.
    let list = "[{\"name\": \"a\", \"arguments\": \"{\\\"x\\\": 1}\"}, {\"name\": \"b\"}]";
    assert_eq!(
        calls(Family::Json, list).1,
        vec![call("a", "{\"x\": 1}"), call("b", "{}")]
    );
    // A JSON answer that names nothing is content.
    let answer = "{\"answer\": 42}";
    assert_eq!(calls(Family::Json, answer), (answer.into(), vec![]));
    // Without its marker, a Hermes model's bare call object still counts.
    assert_eq!(
        calls(Family::Hermes, one).1,
        vec![call("search", "{\"q\": \"rust\"}")]
    );
}

#[test]
fn malformed_or_cut_calls_leave_the_text_as_content() {
    for text in [
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }}\n</tool_call>",
        "<tool_call>\n{\"name\": \"f\", \"argu",
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1},}\n</tool_call>",
        "[TOOL_CALLS]get_weather[ARGS]{\"city\": ]",
    ] {
        let family = if text.starts_with('[') {
            Family::Mistral
        } else {
            Family::Hermes
        };
        assert_eq!(calls(family, text), (text.to_string(), vec![]), "{text}");
    }
}

#[test]
fn prefixes_say_what_is_known_so_far() {
    let text = "Sure.<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": [1, {\"r\"";
    let found = locate(Family::Hermes, text);
    assert_eq!(found.content_end, 5);
    assert_eq!(
        found.calls,
        vec![Call {
            name: Some("f".into()),
            arguments: "{\"q\": [1, {\"r\"".into(),
            complete: false
        }]
    );
    // A tail that may open the marker is held back; whitespace alone may precede a call.
    assert_eq!(locate(Family::Hermes, "Hi <tool").hold_from, 3);
    assert_eq!(locate(Family::Llama3, "  ").hold_from, 0);
    assert_eq!(locate(Family::Llama3, "x <|python").hold_from, 2);
}
