#!/usr/bin/env python3
"""Measures two things against a running `plumb serve`, over plain HTTP (no packages needed):

1. constrained decoding overhead: decode tokens/s of a streamed chat request whose output
   follows a JSON schema (24 short strings), against the same request unconstrained, held to
   the same number of tokens (`ignore_eos`). The two kinds alternate for --rounds rounds; the
   figure is the medians' ratio.
2. prefix caching: time to first token of a request with a ~2,000-token system prompt seen
   for the first time, against a second request with the same system prompt and another
   question. Each round makes a fresh system prompt (a new number at its start), so nothing
   is cached from an earlier round; the figure is the median ratio.

The server needs a context over the system prompt (`plumb serve --ctx 4096`).

Usage: scripts/measure_serve.py [--url http://127.0.0.1:8080] [--rounds 5] [--json]
"""

import argparse
import json
import random
import statistics
import sys
import time
import urllib.error
import urllib.request

SCHEMA = {"type": "array", "minItems": 24, "maxItems": 24,
          "items": {"type": "string", "minLength": 3, "maxLength": 8}}
WORDS = [{"role": "user", "content": "List words about the sea."}]
SENTENCES = [
    "The harbour master logs every ship that enters the bay before sunrise.",
    "Fishermen mend their nets on the quay while gulls circle over the boats.",
    "A lighthouse keeper records the wind, the tide and the height of the waves.",
    "Cargo ships carry grain, timber and steel between the northern ports.",
    "In winter the ferry crosses the strait twice a day if the ice allows it.",
    "The old charts mark reefs, sandbanks and wrecks along the rocky coast.",
]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=600)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url}: {e.code} {e.read().decode()}") from None


def stream(base, model, **body):
    """(times of the streamed content deltas, the content, the time the request was sent)."""
    body = dict(model=model, messages=body.pop("messages"), stream=True, temperature=0, **body)
    t0 = time.perf_counter()
    times, content = [], ""
    with post(base + "/v1/chat/completions", body) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data:"):])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            for c in chunk.get("choices", []):
                text = (c.get("delta") or {}).get("content")
                if text:
                    times.append(time.perf_counter())
                    content += text
    return times, content, t0


def rate(times):
    if len(times) < 9:
        raise RuntimeError(f"only {len(times)} deltas streamed")
    return (len(times) - 1) / (times[-1] - times[0])


def constrained_overhead(base, model, rounds):
    fmt = {"type": "json_schema", "json_schema": {"name": "words", "schema": SCHEMA}}
    free, bound = [], []
    for _ in range(rounds):
        times, content, _ = stream(base, model, messages=WORDS, max_tokens=400,
                                   response_format=fmt)
        words = json.loads(content)
        assert isinstance(words, list) and len(words) == 24, content
        bound.append(rate(times))
        free_times, _, _ = stream(base, model, messages=WORDS, max_tokens=len(times),
                                  ignore_eos=True)
        free.append(rate(free_times))
    c, u = statistics.median(bound), statistics.median(free)
    return {"constrained_tps": bound, "unconstrained_tps": free,
            "constrained_median": c, "unconstrained_median": u, "overhead": 1 - c / u}


def tokens(base, text):
    with post(base + "/tokenize", {"content": text}) as r:
        return len(json.load(r)["tokens"])


def system_prompt(base, nonce, target):
    parts = [f"Session {nonce}. You answer questions about the sea and its ships."]
    rng = random.Random(nonce)
    while tokens(base, " ".join(parts)) < target:
        parts.extend(rng.sample(SENTENCES, len(SENTENCES)))
    return " ".join(parts)


def ttft(base, model, system, question):
    times, _, t0 = stream(base, model, max_tokens=2,
                          messages=[{"role": "system", "content": system},
                                    {"role": "user", "content": question}])
    return times[0] - t0


def prefix_cache(base, model, rounds, target):
    first, second = [], []
    for _ in range(rounds):
        system = system_prompt(base, random.randrange(10**9), target)
        first.append(ttft(base, model, system, "Which ships cross the strait?"))
        second.append(ttft(base, model, system, "What does the lighthouse keeper record?"))
    ratios = [b / a for a, b in zip(first, second)]
    return {"system_tokens": tokens(base, system), "first_ttft_s": first,
            "second_ttft_s": second, "ratios": ratios, "ratio_median": statistics.median(ratios)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--system-tokens", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with urllib.request.urlopen(args.url + "/v1/models", timeout=30) as r:
        model = json.load(r)["data"][0]["id"]
    # One request first, so neither figure pays for a cold start.
    stream(args.url, model, messages=WORDS, max_tokens=4)
    out = {"model": model, "rounds": args.rounds,
           "constrained": constrained_overhead(args.url, model, args.rounds),
           "prefix_cache": prefix_cache(args.url, model, args.rounds, args.system_tokens)}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    c, p = out["constrained"], out["prefix_cache"]
    print(f"model {model}, {args.rounds} rounds")
    print(f"constrained decoding: json_schema {c['constrained_median']:.1f} tok/s, "
          f"unconstrained {c['unconstrained_median']:.1f} tok/s (medians): "
          f"overhead {c['overhead']:+.1%}")
    print(f"prefix caching: {p['system_tokens']}-token system prompt, TTFT first "
          f"{statistics.median(p['first_ttft_s']) * 1000:.0f} ms, second "
          f"{statistics.median(p['second_ttft_s']) * 1000:.0f} ms (medians): "
          f"ratio {p['ratio_median']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
