"""plumb-server's Responses API against the official `openai` Python client, and llama-server's
/tokenize and /detokenize.

Run by tests/clients.rs (see suite_common.py).
"""

import json

import jsonschema
import openai

from suite_common import MODEL, URL, main, raw, sse

client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=300)
INSTRUCTIONS = "Be brief."
QUESTION = "What is the capital of France?"


def create(**kw):
    return client.responses.create(model=MODEL, instructions=INSTRUCTIONS, temperature=0, **kw)


def test_response_greedy_and_streaming_equal():
    r = create(input=QUESTION, max_output_tokens=16, metadata={"run": "1"})
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL, r
    assert "Paris" in r.output_text, r.output_text
    assert [o.type for o in r.output] == ["message"] and r.output[0].role == "assistant", r
    assert r.status in ("completed", "incomplete") and r.output[0].status == r.status, r
    assert r.instructions == INSTRUCTIONS and r.metadata == {"run": "1"} and r.store is False, r
    u = r.usage
    assert u.input_tokens > 0 and 0 < u.output_tokens <= 16, u
    assert u.total_tokens == u.input_tokens + u.output_tokens, u
    events = list(create(input=QUESTION, max_output_tokens=16, stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"], types
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done",
                            "response.output_item.done"], types
    assert types[-1] == ("response.completed" if r.status == "completed"
                         else "response.incomplete"), types
    assert [e.sequence_number for e in events] == list(range(len(events))), events
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == r.output_text, (deltas, r.output_text)
    done = events[-1].response
    assert done.output_text == r.output_text and done.usage.output_tokens == u.output_tokens, done
    assert events[0].response.status == "in_progress" and events[0].response.output == [], events[0]


def test_stream_helper_and_message_items():
    items = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": QUESTION}]},
    ]
    plain = create(input=items, max_output_tokens=16)
    with client.responses.stream(model=MODEL, instructions=INSTRUCTIONS, temperature=0,
                                 input=items, max_output_tokens=16) as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        if plain.status == "completed":
            final = s.get_final_response()
            assert final.output_text == text, (final.output_text, text)
    assert text == plain.output_text, (text, plain.output_text)
    assert plain.usage.input_tokens > create(input=QUESTION, max_output_tokens=1).usage.input_tokens


def test_max_output_tokens_incomplete():
    r = create(input="Write a long poem about the sea.", max_output_tokens=2)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens", r
    assert r.usage.output_tokens == 2 and r.output[0].status == "incomplete", r


def test_stream_events_on_the_wire():
    events = sse("/v1/responses", {"model": MODEL, "input": "Hi", "max_output_tokens": 2,
                                   "temperature": 0, "stream": True})
    assert all(name == data["type"] for name, data in events), events
    assert events[-1][0] == "response.incomplete", events[-1]


def test_stateful_and_unsupported_fields_refused():
    for kw, param in [
        (dict(store=True), "store"),
        (dict(previous_response_id="resp_123"), "previous_response_id"),
        (dict(reasoning={"effort": "low"}), "reasoning"),
        (dict(tools=[{"type": "web_search"}]), "tools[0]"),
        (dict(input=[{"role": "user", "content": [{"type": "input_image",
                                                    "image_url": "data:image/png;base64,AA"}]}]),
         "input[0].content[0]"),
    ]:
        kw.setdefault("input", "hi")
        try:
            create(max_output_tokens=2, **kw)
            raise AssertionError(f"{param} accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.param == param, (param, e.body)
    r = create(input="hi", max_output_tokens=1, store=False)
    assert r.usage.output_tokens == 1, r


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
WEATHER_Q = "What is the weather in Paris?"


def test_forced_function_call_streamed_and_its_output_round_trip():
    kw = dict(input=WEATHER_Q, max_output_tokens=80, tools=[WEATHER], tool_choice="required",
              parallel_tool_calls=False)
    r = create(**kw)
    assert r.status == "completed" and [o.type for o in r.output] == ["function_call"], r.output
    call = r.output[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_"), call
    assert call.id.startswith("fc_") and call.status == "completed", call
    args = json.loads(call.arguments)
    jsonschema.validate(args, WEATHER["parameters"])
    assert r.tools[0].name == "get_weather" and r.tool_choice == "required", r
    events = list(create(stream=True, **kw))
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress",
                         "response.output_item.added"], types
    assert types[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"], types
    assert set(types[3:-3]) == {"response.function_call_arguments.delta"}, types
    assert [e.sequence_number for e in events] == list(range(len(events))), events
    added = events[2].item
    assert (added.type, added.name, added.arguments) == ("function_call", "get_weather", ""), added
    assert added.call_id.startswith("call_") and added.call_id != call.call_id, added
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments == events[-3].arguments, (deltas, call.arguments)
    assert events[-2].item.arguments == call.arguments, events[-2]
    final = events[-1].response
    assert [(o.type, o.call_id, o.arguments) for o in final.output] == \
        [("function_call", added.call_id, call.arguments)], final.output
    named = create(input=WEATHER_Q, max_output_tokens=80, tools=[WEATHER],
                   tool_choice={"type": "function", "name": "get_weather"})
    assert [o.name for o in named.output if o.type == "function_call"] == ["get_weather"], named

    result = '{"city": "Paris", "temperature": 22, "unit": "celsius", "sky": "clear"}'
    turns = [{"role": "user", "content": WEATHER_Q},
             {"type": "function_call", "call_id": call.call_id, "name": call.name,
              "arguments": call.arguments},
             {"type": "function_call_output", "call_id": call.call_id, "output": result}]
    answer = create(input=turns, tools=[WEATHER], max_output_tokens=40)
    assert answer.output and answer.output[0].type == "message" and answer.output_text, answer
    bare = create(input=WEATHER_Q, tools=[WEATHER], max_output_tokens=1)
    # The call and its output went into the prompt.
    grown = answer.usage.input_tokens - bare.usage.input_tokens
    assert grown > len(result) // 4, (answer.usage, bare.usage)


PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 30},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def test_text_format_json_schema_and_json_object():
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    r = create(input="Invent a person.", max_output_tokens=60, text=fmt)
    assert r.status == "completed", r
    jsonschema.validate(json.loads(r.output_text), PERSON)
    assert r.text.format.type == "json_schema" and r.text.format.name == "person", r.text
    with client.responses.stream(model=MODEL, instructions=INSTRUCTIONS, temperature=0,
                                 input="Invent a person.", max_output_tokens=60, text=fmt) as s:
        streamed = "".join(e.delta for e in s if e.type == "response.output_text.delta")
    assert streamed == r.output_text, (streamed, r.output_text)
    obj = create(input="Give me a JSON object with the name and age of a cat.",
                 max_output_tokens=60, text={"format": {"type": "json_object"}})
    assert obj.status == "completed" and isinstance(json.loads(obj.output_text), dict), obj


def tokenize(content, **kw):
    status, body = raw("/tokenize", {"content": content, **kw})
    assert status == 200, (status, body)
    return body["tokens"]


def test_tokenize_detokenize_round_trip():
    text = "Hello world! Ünïcödé and <|im_start|> tokens, 12345."
    ids = tokenize(text)
    assert ids and all(isinstance(i, int) for i in ids), ids
    status, body = raw("/detokenize", {"tokens": ids})
    assert status == 200 and body == {"content": text}, (status, body)
    # Control tokens are one token when parsed, plain text when not.
    assert len(tokenize("<|im_start|>")) == 1
    assert len(tokenize("<|im_start|>", parse_special=False)) > 1
    pieces = tokenize(text, with_pieces=True)
    assert [p["id"] for p in pieces] == ids, pieces
    # A piece is text, or its bytes when it is not whole UTF-8.
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"])
                      for p in pieces)
    assert joined.decode() == text, pieces
    # add_special adds what a completion prompt gets: the counts agree with its usage.
    special = tokenize(text, add_special=True)
    assert special[len(special) - len(ids):] == ids, (special, ids)
    r = client.completions.create(model=MODEL, prompt=text, max_tokens=1, temperature=0)
    assert r.usage.prompt_tokens == len(special), (r.usage, len(special))
    status, body = raw("/detokenize", {"tokens": [ids[0], 10**9]})
    assert status == 400 and body["error"]["param"] == "tokens[1]", (status, body)
    status, body = raw("/tokenize", {"text": "no content field"})
    assert status == 400 and "content" in body["error"]["message"], (status, body)


if __name__ == "__main__":
    main(globals(), f"openai {openai.__version__} (Responses)")
