"""POST /v1/embeddings against the official `openai` client: run by embeddings_client.rs with
PLUMB_URL (the server), PLUMB_EMBED_MODEL (its encoder's id), PLUMB_URL_WITHOUT (a server
without an encoder) and PLUMB_FIXTURE (fixtures/all-minilm-l6-v2/embeddings.json,
sentence-transformers' vectors)."""

import base64
import json
import math
import os
import struct
import sys

import openai

client = openai.OpenAI(base_url=os.environ["PLUMB_URL"] + "/v1", api_key="unused")
MODEL = os.environ["PLUMB_EMBED_MODEL"]
fx = json.load(open(os.environ["PLUMB_FIXTURE"], encoding="utf-8"))
sentences, want = fx["sentences"], fx["embeddings"]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def check(vectors, targets, what):
    assert len(vectors) == len(targets), what
    for v, t in zip(vectors, targets):
        assert len(v) == 384, (what, len(v))
        c = cosine(v, t)
        assert c >= 0.9999, (what, c)


LONG = len(sentences) - 1  # 300 words: 302 tokens, longer than the model's 256
assert len(sentences[LONG].split()) == 300

# A list of strings in one request, as floats: every vector is sentence-transformers'; the
# long one is cut as sentence-transformers cuts it when the request asks for that.
r = client.embeddings.create(
    model=MODEL, input=sentences, encoding_format="float", extra_body={"truncate": True}
)
assert r.model == MODEL and r.object == "list"
assert [d.index for d in r.data] == list(range(len(sentences)))
assert r.usage.prompt_tokens == sum(len(t) for t in fx["token_ids"]), r.usage
check([d.embedding for d in r.data], want, "float list")

# The client's default asks for base64 and decodes it.
r = client.embeddings.create(model=MODEL, input=sentences[0])
check([r.data[0].embedding], want[:1], "base64 one")

# base64 by hand: little-endian f32 bytes.
raw = client.embeddings.with_raw_response.create(
    model=MODEL, input=sentences[1], encoding_format="base64"
).http_response.json()
b = base64.b64decode(raw["data"][0]["embedding"])
check([list(struct.unpack("<384f", b))], want[1:2], "base64 raw")

# Token ids in (the text's ids without [CLS]/[SEP], which the server adds), one and many.
ids = [t[1:-1] for t in fx["token_ids"][:3]]
r = client.embeddings.create(model=MODEL, input=ids[0], encoding_format="float")
check([r.data[0].embedding], want[:1], "ids")
r = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
check([d.embedding for d in r.data], want[:3], "many ids")

# The model's own dimensions are accepted; others are refused.
r = client.embeddings.create(model=MODEL, input="x", dimensions=384, encoding_format="float")
assert len(r.data[0].embedding) == 384
# Bad inputs are 400s whose message names the problem.
for bad, words in [
    (dict(input="x", dimensions=100), ["384", "100"]),
    (dict(input=[]), ["no input"]),
    (dict(input=["fine", ""]), ["input 1", "empty"]),
    (dict(input=[[101], []]), ["input 1", "empty"]),
    (dict(input=[[999999]]), ["999999", "vocabulary"]),
    (dict(input=["fine", sentences[LONG]]), ["input 1", "302 tokens", "256"]),
    (dict(input="x", encoding_format="int8"), ["int8"]),
]:
    try:
        client.embeddings.create(model=MODEL, **bad)
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        message = e.body["message"] if isinstance(e.body, dict) else str(e)
        assert all(w in message for w in words), (bad, message)
    else:
        raise AssertionError(f"{bad} was accepted")
try:
    client.embeddings.create(model="no-such-model", input="x")
except openai.NotFoundError:
    pass
else:
    raise AssertionError("an unknown model was accepted")

# The encoder is listed beside the chat model.
listed = [m.id for m in client.models.list().data]
assert MODEL in listed and len(listed) == 2, listed
assert client.models.retrieve(MODEL).id == MODEL

# A server without an encoder says that it has none.
plain = openai.OpenAI(base_url=os.environ["PLUMB_URL_WITHOUT"] + "/v1", api_key="unused")
try:
    plain.embeddings.create(model=MODEL, input="x")
except openai.NotFoundError as e:
    assert "--embedding-model" in str(e), e
else:
    raise AssertionError("a server without an encoder answered /v1/embeddings")

print("embeddings suite: all passed")
sys.exit(0)
