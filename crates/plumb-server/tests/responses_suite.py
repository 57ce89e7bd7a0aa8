"""plumb-server's Responses API against the official `openai` Python client, and llama-server's
/tokenize and /detokenize.

Run by tests/clients.rs (see suite_common.py).
"""

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
        (dict(tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}]), "tools"),
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
