"""plumb-server's chat and completions endpoints against the official `openai` Python client.

Run by tests/clients.rs (see suite_common.py). Token budgets stay small: the reference backend
runs ~10 tokens/s (prompt or generated) on 2 cores.
"""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from suite_common import CTX, KEY, KEYED_URL, MAX_BATCH, MAX_BODY, MODEL, URL, main, raw

client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=300)
# A short system message keeps chat prompts ~20 tokens (the template's default one is longer).
SYSTEM = {"role": "system", "content": "Be brief."}


def chat_msgs(text):
    return [SYSTEM, {"role": "user", "content": text}]


def chat(**kw):
    return client.chat.completions.create(model=MODEL, **kw)


def complete(**kw):
    return client.completions.create(model=MODEL, **kw)


def chat_stream(**kw):
    """Streams a chat request; returns ({index: text}, {index: finish_reason}, usage, chunks)."""
    texts, finishes, usage, chunks = {}, {}, None, []
    for ch in chat(stream=True, **kw):
        chunks.append(ch)
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason is not None:
                finishes[c.index] = c.finish_reason
    return texts, finishes, usage, chunks


def complete_stream(**kw):
    texts, finishes, usage = {}, {}, None
    for ch in complete(stream=True, **kw):
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.text or "")
            if c.finish_reason is not None:
                finishes[c.index] = c.finish_reason
    return texts, finishes, usage


def assert_error_shape(body, status):
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    return err


def metrics():
    _, text = raw("/metrics")
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        series, value = line.rsplit(" ", 1)
        name = series.split("{")[0]
        status = re.search(r'status="([a-z_]+)"', series)
        key = f"{name}:{status.group(1)}" if status else name
        values[key] = float(value)
    return values


# --- the checks -------------------------------------------------------------------------

def test_health_and_models():
    status, body = raw("/health")
    assert status == 200 and body == {"status": "ok"}, (status, body)
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL], models
    # The context length, under vLLM's name and the common one.
    extra = models[0].model_extra
    assert extra["max_model_len"] == CTX and extra["context_length"] == CTX, extra


def test_chat_greedy_and_streaming_equal():
    kw = dict(messages=chat_msgs("What is the capital of France?"), max_tokens=12, temperature=0)
    r = chat(**kw)
    c = r.choices[0]
    assert r.object == "chat.completion" and c.message.role == "assistant", r
    assert "Paris" in c.message.content, c.message.content
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    u = r.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    texts, finishes, usage, chunks = chat_stream(stream_options={"include_usage": True}, **kw)
    assert texts == {0: c.message.content}, (texts, c.message.content)
    assert finishes == {0: c.finish_reason}, finishes
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    assert chunks[-1].choices == [] and usage is not None, chunks[-1]
    assert (usage.prompt_tokens, usage.completion_tokens) == (u.prompt_tokens, u.completion_tokens)


def test_completions_greedy_and_streaming_equal():
    r = complete(prompt="The capital of France is", max_tokens=8, temperature=0)
    c = r.choices[0]
    assert r.object == "text_completion" and "Paris" in c.text, r
    assert r.usage.completion_tokens == 8 and c.finish_reason == "length", r
    texts, finishes, usage = complete_stream(prompt="The capital of France is", max_tokens=8,
                                             temperature=0)
    assert texts == {0: c.text} and finishes == {0: "length"}, (texts, finishes)
    assert usage is None  # not asked for


def test_stop_sequences():
    prompt = "Count: 1, 2, 3, 4,"
    base = complete(prompt=prompt, max_tokens=12, temperature=0).choices[0].text
    # A stop string from the middle of the greedy text: the answer ends right before it.
    stop = base[len(base) // 2:len(base) // 2 + 2]
    at = base.find(stop)
    r = complete(prompt=prompt, max_tokens=12, temperature=0, stop=[stop, "never appears"])
    assert r.choices[0].text == base[:at], (base, stop, r.choices[0].text)
    assert r.choices[0].finish_reason == "stop", r.choices[0]
    texts, finishes, _ = complete_stream(prompt=prompt, max_tokens=12, temperature=0, stop=stop)
    assert texts == {0: base[:at]} and finishes == {0: "stop"}, (texts, finishes)


def test_max_tokens_finish_length():
    r = complete(prompt="1, 2, 3, 4,", max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5, r
    r = chat(messages=chat_msgs("Write a long poem about the sea."), max_completion_tokens=4,
             temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4, r


def test_logprobs():
    r = chat(messages=chat_msgs("Say hello."), max_tokens=6, temperature=0, logprobs=True,
             top_logprobs=3)
    c = r.choices[0]
    content = c.logprobs.content
    assert len(content) == r.usage.completion_tokens, (len(content), r.usage)
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3, t
        # Greedy: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token, t
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5, t
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token, t
    if c.finish_reason == "length":
        assert "".join(t.token for t in content) == c.message.content, (content, c.message)
    r = complete(prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4, lp
    assert "".join(lp.tokens) == r.choices[0].text, (lp.tokens, r.choices[0].text)
    assert all(x <= 0 for x in lp.token_logprobs) and all(1 <= len(t) <= 2 for t in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset), lp.text_offset


def test_n_choices_and_seeds():
    kw = dict(prompt="Once upon a time", max_tokens=8, temperature=1.0, seed=1234, n=2)
    a = complete(**kw)
    assert [c.index for c in a.choices] == [0, 1], a.choices
    assert 2 <= a.usage.completion_tokens <= 16, a.usage
    b = complete(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices], (a, b)
    texts, finishes, usage = complete_stream(stream_options={"include_usage": True}, **kw)
    assert texts == {c.index: c.text for c in a.choices}, (texts, a.choices)
    assert usage.completion_tokens == a.usage.completion_tokens, usage
    # A seed reproduces a single choice as well.
    one = dict(kw, n=1, seed=99)
    assert complete(**one).choices[0].text == complete(**one).choices[0].text


def tokenize(text):
    status, body = raw("/tokenize", {"content": text})
    assert status == 200, (status, body)
    return body["tokens"]


def test_logit_bias():
    prompt = "The capital of France is"
    first = complete(prompt=prompt, max_tokens=1, temperature=0).choices[0].text
    [best] = tokenize(first)
    # Banned, the greedy token gives way; a token pushed by +100 is taken.
    banned = complete(prompt=prompt, max_tokens=1, temperature=0, logit_bias={str(best): -100})
    assert banned.choices[0].text != first, (first, banned.choices[0].text)
    [pushed] = tokenize(" banana")
    forced = chat(messages=chat_msgs("Say hi."), max_tokens=1, temperature=0,
                  logit_bias={str(pushed): 100})
    assert forced.choices[0].message.content == " banana", forced.choices[0]
    try:
        complete(prompt=prompt, max_tokens=1, logit_bias={"not-a-token": 1})
        raise AssertionError("a bad logit_bias key accepted")
    except openai.BadRequestError as e:
        assert e.param == "logit_bias", e.body


def test_content_parts_equal_plain_content():
    kw = dict(max_tokens=6, temperature=0)
    plain = chat(messages=chat_msgs("Name a colour."), **kw).choices[0].message.content
    parts = [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]
    r = chat(messages=[SYSTEM, {"role": "user", "content": parts}], **kw)
    assert r.choices[0].message.content == plain, (r.choices[0].message.content, plain)


def test_known_fields_refused_by_name():
    msgs = chat_msgs("hi")
    image = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    for extra, param in [
        (dict(audio={"voice": "alloy", "format": "wav"}, modalities=["text", "audio"]), "audio"),
        (dict(modalities=["text", "audio"]), "modalities"),
        (dict(prediction={"type": "content", "content": "hi"}), "prediction"),
        (dict(reasoning_effort="low"), "reasoning_effort"),
        (dict(store=True), "store"),
        (dict(n=MAX_BATCH + 1), "n"),
        (dict(messages=[SYSTEM, {"role": "user", "content": image}]), "messages[1].content[1]"),
    ]:
        kw = dict(messages=msgs, max_tokens=2)
        kw.update(extra)
        try:
            chat(**kw)
            raise AssertionError(f"{param} accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.param == param, (param, e.body)
            assert param.split("[")[0] in e.message, e.message
    try:
        complete(prompt="hi", max_tokens=2, best_of=3)
        raise AssertionError("best_of accepted")
    except openai.BadRequestError as e:
        assert e.param == "best_of", e.body
    # Values that ask for nothing pass, and unknown fields stay ignored.
    r = chat(messages=msgs, max_tokens=1, temperature=0, store=False, modalities=["text"],
             extra_body={"no_such_field": {"x": 1}})
    assert r.usage.completion_tokens == 1, r


def test_errors_malformed_and_wrong_types():
    path = "/v1/chat/completions"
    status, body = raw(path, b"{not json")
    assert status == 400 and "JSON" in assert_error_shape(body, status)["message"], body
    assert assert_error_shape(body, status)["type"] == "invalid_request_error"
    status, body = raw(path, {"model": MODEL, "messages": "hi"})
    assert status == 400, (status, body)
    assert_error_shape(body, status)
    status, body = raw(path, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                              "temperature": "hot"})
    assert status == 400 and "hot" in assert_error_shape(body, status)["message"], body
    status, body = raw("/v1/completions", {"model": MODEL})
    assert status == 400 and "prompt" in assert_error_shape(body, status)["message"], body
    try:
        chat(messages=chat_msgs("hi"), temperature=-1)
        raise AssertionError("negative temperature accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "temperature" in e.message, e
    try:
        complete(prompt="hi", max_tokens=0)
        raise AssertionError("max_tokens 0 accepted")
    except openai.BadRequestError as e:
        assert e.param == "max_tokens", e.body


def test_prefix_cache_reports_cached_tokens():
    # A shared system prompt of several 16-token blocks, then two different questions: the
    # second request reuses the first one's blocks and says how many tokens it did not run.
    system = {"role": "system", "content": " ".join(["Answer in one short sentence, plainly."] * 8)}
    before = metrics()["plumb_prefix_cache_hits_total"]
    a = chat(messages=[system, {"role": "user", "content": "Name a colour."}], max_tokens=2,
             temperature=0)
    b = chat(messages=[system, {"role": "user", "content": "Name a fruit."}], max_tokens=2,
             temperature=0)
    cached = b.usage.prompt_tokens_details.cached_tokens
    assert 48 <= cached < b.usage.prompt_tokens and cached % 16 == 0, (a.usage, b.usage)
    m = metrics()
    assert m["plumb_prefix_cache_hits_total"] >= before + cached, m
    assert m["plumb_prefix_cache_queries_total"] >= m["plumb_prefix_cache_hits_total"], m


def test_error_unknown_model_and_route():
    try:
        client.chat.completions.create(model="no-such-model", messages=chat_msgs("hi"),
                                       max_tokens=2)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and e.code == "model_not_found", e.body
        assert "no-such-model" in e.message
    status, body = raw("/v1/nothing-here", {})
    assert status == 404, status
    assert_error_shape(body, status)


def test_error_api_key():
    keyed = openai.OpenAI(base_url=KEYED_URL + "/v1", api_key=KEY, max_retries=0, timeout=300)
    wrong = openai.OpenAI(base_url=KEYED_URL + "/v1", api_key="wrong", max_retries=0, timeout=60)
    try:
        wrong.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        raise AssertionError("wrong key accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.type == "authentication_error", e.body
    status, body = raw("/v1/models", base=KEYED_URL)
    assert status == 401, (status, body)
    assert_error_shape(body, status)
    assert [m.id for m in keyed.models.list().data] == [MODEL]
    r = keyed.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=2,
                                 temperature=0)
    assert r.usage.completion_tokens == 2, r
    # The open server wants no key; health and metrics stay open on the keyed one.
    assert raw("/health", base=KEYED_URL)[0] == 200


def test_error_too_long():
    try:
        complete(prompt="hi", max_tokens=CTX + 10)
        raise AssertionError("max_tokens over the context accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "context" in e.message, e.message
        assert e.code == "context_length_exceeded", e.body
    try:
        chat(messages=chat_msgs("the quick brown fox " * 600), max_tokens=4)
        raise AssertionError("over-long prompt accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "context" in e.message, e.message


def test_error_body_too_large():
    big = {"model": MODEL, "prompt": "x" * (MAX_BODY + 1000), "max_tokens": 1}
    status, body = raw("/v1/completions", big)
    assert status == 413, status
    assert "limit" in assert_error_shape(body, status)["message"], body


def test_concurrent_streams():
    prompts = ["The capital of France is", "Water boils at", "The sun is a", "Rust is a"]
    kw = dict(max_tokens=8, temperature=0)
    want = {p: complete(prompt=p, **kw).choices[0].text for p in prompts}
    peak, stop = [0.0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], metrics().get("plumb_running_sequences", 0))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            jobs = [pool.submit(complete_stream, prompt=prompts[i % 4], **kw) for i in range(16)]
            got = [j.result() for j in jobs]
    finally:
        stop.set()
        watcher.join()
    for i, (texts, finishes, _) in enumerate(got):
        assert texts == {0: want[prompts[i % 4]]}, (i, texts, want[prompts[i % 4]])
        assert 0 in finishes, finishes
    assert peak[0] >= 8, f"at most {peak[0]} sequences ran at once"


def test_disconnect_frees_sequence():
    before = metrics().get("plumb_requests_total:cancelled", 0)
    stream = chat(messages=chat_msgs("Tell me a long story."), max_tokens=400, temperature=0,
                  stream=True, extra_body={"ignore_eos": True})
    n = 0
    for _ in stream:
        n += 1
        if n == 3:
            break
    stream.close()
    deadline = time.time() + 60
    while True:
        m = metrics()
        if m.get("plumb_running_sequences") == 0 and m.get("plumb_requests_total:cancelled", 0) > before:
            break
        assert time.time() < deadline, m
        time.sleep(0.1)
    assert m["plumb_kv_cache_used_bytes"] == 0, m
    assert m["plumb_kv_blocks_used"] == 0 and m["plumb_kv_blocks_free"] > 0, m
    assert m["plumb_time_to_first_token_seconds_count"] > 0, m


if __name__ == "__main__":
    main(globals(), f"openai {openai.__version__}")
