"""plumb-server's Anthropic Messages API against the official `anthropic` Python client.

Run by tests/clients.rs (see suite_common.py). Sampling fields the client has no argument
for go in `extra_body`, as they would from any client that sends them.
"""

import json

import anthropic
import jsonschema

from suite_common import KEY, KEYED_URL, MODEL, URL, main, raw, sse

client = anthropic.Anthropic(base_url=URL, api_key="unused", max_retries=0, timeout=300)
SYSTEM = "Be brief."
GREEDY = {"temperature": 0}


def ask(text):
    return [{"role": "user", "content": text}]


def create(**kw):
    kw.setdefault("system", SYSTEM)
    extra = {**GREEDY, **kw.pop("extra_body", {})}
    return client.messages.create(model=MODEL, extra_body=extra, **kw)


def test_message_greedy_and_streaming_equal():
    kw = dict(messages=ask("What is the capital of France?"), max_tokens=12)
    m = create(**kw)
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL, m
    assert m.id.startswith("msg_"), m.id
    assert [b.type for b in m.content] == ["text"] and "Paris" in m.content[0].text, m.content
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None, m
    assert m.usage.input_tokens > 0 and 0 < m.usage.output_tokens <= 12, m.usage
    with client.messages.stream(model=MODEL, system=SYSTEM, extra_body=GREEDY, **kw) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == m.content[0].text, (streamed, m.content[0].text)
    assert final.content[0].text == streamed and final.stop_reason == m.stop_reason, final
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        m.usage.input_tokens, m.usage.output_tokens), final.usage


def test_stream_event_sequence_on_the_wire():
    events = sse("/v1/messages", {"model": MODEL, "max_tokens": 3, "stream": True,
                                  "temperature": 0, "messages": ask("Count to ten.")})
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"], names
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"], names
    assert set(names[3:-3]) == {"content_block_delta"}, names
    assert all(data["type"] == name for name, data in events), events
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None, start
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}, delta
    assert delta["usage"]["output_tokens"] == 3, delta
    assert all(d["delta"]["type"] == "text_delta" for n, d in events if n == "content_block_delta")


def test_stop_sequences_and_max_tokens():
    kw = dict(messages=ask("Count from one to twenty."), max_tokens=16)
    base = create(**kw).content[0].text
    stop = base[len(base) // 2:len(base) // 2 + 2]
    at = base.find(stop)
    m = create(stop_sequences=["never appears", stop], **kw)
    assert m.content[0].text == base[:at], (base, stop, m.content[0].text)
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", stop), m
    with client.messages.stream(model=MODEL, system=SYSTEM, extra_body=GREEDY,
                                stop_sequences=[stop], **kw) as s:
        assert "".join(s.text_stream) == base[:at]
        final = s.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop), final
    short = create(messages=kw["messages"], max_tokens=2)
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2, short


def test_multi_turn_system_blocks_and_prefill():
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": [{"type": "text", "text": "The capital of France is"}]},
    ]
    system = [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]
    m = create(system=system, messages=messages, max_tokens=4, metadata={"user_id": "u1"})
    # The answer continues the assistant's text instead of starting a new turn.
    assert "Paris" in m.content[0].text, m.content
    assert not m.content[0].text.startswith("The capital"), m.content
    count = client.messages.count_tokens(model=MODEL, system=system, messages=messages)
    assert count.input_tokens == m.usage.input_tokens, (count, m.usage)


def test_count_tokens():
    one = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=ask("Hi"))
    m = create(messages=ask("Hi"), max_tokens=1)
    assert one.input_tokens == m.usage.input_tokens, (one, m.usage)
    longer = ask("Hi") + [{"role": "assistant", "content": "Hello!"},
                          {"role": "user", "content": "How are you today?"}]
    more = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=longer)
    assert more.input_tokens > one.input_tokens + 5, (one, more)


def test_errors():
    status, body = raw("/v1/messages", {"model": MODEL, "messages": ask("hi")})
    assert status == 400, (status, body)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
    assert "max_tokens" in body["error"]["message"], body
    try:
        client.messages.create(model="claude-no-such-model", max_tokens=2, messages=ask("hi"))
        raise AssertionError("unknown model accepted")
    except anthropic.NotFoundError as e:
        assert e.status_code == 404 and e.body["error"]["type"] == "not_found_error", e.body
        assert "claude-no-such-model" in e.body["error"]["message"], e.body
    web = {"type": "web_search_20250305", "name": "web_search"}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}
    for kw, field in [
        (dict(tools=[web]), "tools[0]"),
        (dict(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}), "tool_choice"),
        (dict(messages=[{"role": "user", "content": [image]}]), "messages[0].content[0]"),
        (dict(thinking={"type": "enabled", "budget_tokens": 1024}), "thinking"),
    ]:
        kw.setdefault("messages", ask("hi"))
        try:
            client.messages.create(model=MODEL, max_tokens=2, **kw)
            raise AssertionError(f"{field} accepted")
        except anthropic.BadRequestError as e:
            assert e.body["error"]["type"] == "invalid_request_error", e.body
            assert field in e.body["error"]["message"], (field, e.body)


WEATHER = {
    "name": "get_weather",
    "description": "The current weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
TIME = {
    "name": "get_time",
    "description": "The local time in a time zone",
    "input_schema": {
        "type": "object",
        "properties": {"zone": {"type": "string", "maxLength": 40}},
        "required": ["zone"],
        "additionalProperties": False,
    },
}
SCHEMAS = {t["name"]: t["input_schema"] for t in (WEATHER, TIME)}
WEATHER_Q = ask("What is the weather in Paris?")


def tool_uses(message):
    return [(b.name, b.input) for b in message.content if b.type == "tool_use"]


def check_tool_uses(message, names):
    uses = [b for b in message.content if b.type == "tool_use"]
    assert uses and message.stop_reason == "tool_use", message
    ids = [b.id for b in uses]
    assert all(i.startswith("toolu_") for i in ids) and len(set(ids)) == len(ids), ids
    for b in uses:
        assert b.name in names, b
        jsonschema.validate(b.input, SCHEMAS[b.name])


def test_forced_tool_use_validates_and_streams_the_same():
    kw = dict(messages=WEATHER_Q, max_tokens=80, tools=[WEATHER, TIME],
              tool_choice={"type": "any", "disable_parallel_tool_use": True})
    m = create(**kw)
    check_tool_uses(m, {"get_weather", "get_time"})
    assert [b.type for b in m.content] == ["tool_use"], m.content
    with client.messages.stream(model=MODEL, system=SYSTEM, extra_body=GREEDY, **kw) as s:
        final = s.get_final_message()
    assert tool_uses(final) == tool_uses(m), (final.content, m.content)
    assert (final.stop_reason, final.usage.output_tokens) == ("tool_use", m.usage.output_tokens)


def test_named_tool_use_and_the_stream_on_the_wire():
    body = {"model": MODEL, "max_tokens": 60, "temperature": 0, "messages": WEATHER_Q,
            "tools": [WEATHER, TIME], "tool_choice": {"type": "tool", "name": "get_time"}}
    m = create(**{k: v for k, v in body.items() if k not in ("model", "temperature")})
    check_tool_uses(m, {"get_time"})
    events = sse("/v1/messages", dict(body, stream=True))
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"], names
    assert names[-2:] == ["message_delta", "message_stop"], names
    assert all(data["type"] == name for name, data in events), events
    starts = [d for n, d in events if n == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["tool_use"], starts
    block = starts[0]["content_block"]
    assert block["name"] == "get_time" and block["input"] == {}, block
    assert block["id"].startswith("toolu_"), block
    # start, input_json_delta fragments, stop: all of block 0, in that order.
    body_events = names[names.index("content_block_start"):names.index("message_delta")]
    assert body_events[-1] == "content_block_stop" and \
        set(body_events[1:-1]) == {"content_block_delta"}, body_events
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert all(d["index"] == 0 and d["delta"]["type"] == "input_json_delta" for d in deltas), deltas
    streamed = json.loads("".join(d["delta"]["partial_json"] for d in deltas))
    assert streamed == m.content[0].input, (streamed, m.content[0].input)
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use", events[-2]


def test_tool_result_round_trip():
    call = {"type": "tool_use", "id": "toolu_abc", "name": "get_weather",
            "input": {"city": "Paris", "unit": "celsius"}}
    result = '{"city": "Paris", "temperature": 22, "unit": "celsius", "sky": "clear"}'
    turns = WEATHER_Q + [
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_abc",
                                      "content": [{"type": "text", "text": result}]}]},
    ]
    m = create(messages=turns, tools=[WEATHER], max_tokens=40)
    assert m.content and m.content[0].type == "text" and m.content[0].text, m.content
    assert m.stop_reason in ("end_turn", "max_tokens", "tool_use"), m
    bare = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=WEATHER_Q,
                                        tools=[WEATHER])
    # The call and its result went into the prompt.
    assert m.usage.input_tokens - bare.input_tokens > len(result) // 4, (m.usage, bare)
    failed = turns[:-1] + [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_abc", "content": "timeout", "is_error": True}]}]
    m = create(messages=failed, tools=[WEATHER], max_tokens=4)
    assert m.usage.output_tokens > 0, m


def test_output_config_json_schema_validates():
    person = {"type": "object",
              "properties": {"name": {"type": "string", "maxLength": 30},
                             "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    kw = dict(messages=ask("Invent a person."), max_tokens=60,
              output_config={"format": {"type": "json_schema", "schema": person}})
    m = create(**kw)
    assert m.stop_reason == "end_turn", m
    jsonschema.validate(json.loads(m.content[0].text), person)
    beta = create(messages=kw["messages"], max_tokens=60,
                  extra_body={"output_format": {"type": "json_schema", "schema": person}})
    assert beta.content[0].text == m.content[0].text, (beta.content, m.content)


def test_api_key_headers():
    body = {"model": MODEL, "messages": ask("hi")}
    version = {"anthropic-version": "2023-06-01"}
    status, got = raw("/v1/messages/count_tokens", body, base=KEYED_URL,
                      headers={"x-api-key": KEY, **version})
    assert status == 200 and got["input_tokens"] > 0, (status, got)
    status, got = raw("/v1/messages/count_tokens", body, base=KEYED_URL,
                      headers={"x-api-key": "wrong", **version})
    assert status == 401 and got["error"]["type"] == "authentication_error", (status, got)
    keyed = anthropic.Anthropic(base_url=KEYED_URL, api_key=KEY, max_retries=0, timeout=300)
    assert keyed.messages.count_tokens(model=MODEL, messages=ask("hi")).input_tokens > 0
    wrong = anthropic.Anthropic(base_url=KEYED_URL, api_key="wrong", max_retries=0, timeout=60)
    try:
        wrong.messages.count_tokens(model=MODEL, messages=ask("hi"))
        raise AssertionError("wrong key accepted")
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401 and e.body["type"] == "error", e.body


if __name__ == "__main__":
    main(globals(), f"anthropic {anthropic.__version__}")
