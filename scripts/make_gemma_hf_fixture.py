#!/usr/bin/env python3
"""mlx-lm's outputs on Gemma 3 270M as a Hugging Face directory written by plumb.

plumb writes the bf16 gemma3_text directory itself from the Gemma 3 GGUF
(`plumb quantize -m gemma-3-270m-q4_k_m.gguf --hf bf16 -o DIR`: the GGUF's weights
dequantized and rounded to bf16, the norms without the converter's `1 +`, Hugging Face names,
a gemma3_text config.json). This script loads that directory in mlx-lm
(`mlx_lm.utils.load_model`: mlx-lm's own gemma3_text model, no tokenizer) and records, in
--record FILE (JSON):

- `tensor_digest`: sha256 of the directory's tensors (as scripts/make_mlx_fixture.py
  computes it), so a test can check that plumb still writes exactly these tensors;
- `greedy`: for the 8 prompts of fixtures/gemma-3-270m-q4_k_m/greedy.json (their token ids,
  BOS included), mlx-lm's greedy continuation of 24 tokens with the five largest logits of
  every step (for teacher forcing: a test feeds mlx-lm's tokens back to plumb);
- `perplexity_512`: mlx-lm's perplexity of apache-2.0.tokens.json at context 512, with
  llama.cpp's procedure for a model that adds BOS (every chunk's first token replaced by BOS,
  the second half of each chunk scored; see that fixture's README);
- `llama_cpp_agreement`: mlx-lm's greedy text against llama.cpp's (`greedy_text_24` of the
  fixture, made by llama.cpp from the GGUF itself): per prompt, how many of mlx-lm's tokens
  decode to a prefix of llama.cpp's text, and whether all 24 do. The tokens are decoded with
  the GGUF's own vocabulary (SentencePiece pieces: `▁` is a space, `<0xNN>` a byte), read by
  the small GGUF reader below. Agreement with llama.cpp shows the written directory is a
  correct Gemma 3 checkpoint (names, norms, RoPE order), independently of plumb's forward.

With --mlx-q4 it also converts the directory with mlx-lm (4-bit groups of 64) and records the
same for it, evaluated with its quantized layers replaced by `mx.dequantize`'s weights
(`mlx_lm.utils.dequantize_model`; mlx-cpu's quantized matmul is too slow on a small machine).

Usage:
    python3 -m pip install --target /tmp/mlx mlx==0.32.4 mlx-cpu==0.32.4 mlx-lm==0.32.2
    cargo build --release -p plumb-cli
    PYTHONPATH=/tmp/mlx python3 scripts/make_gemma_hf_fixture.py \
        --gguf ~/.cache/plumb/gemma-3-270m-q4_k_m.gguf --out /tmp/gemma-dirs \
        --record fixtures/mlx/gemma3-record.json [--mlx-q4]
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import mlx.core as mx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mlx_fixture import tensor_digest, top5  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
FIXTURES = os.path.join(ROOT, "fixtures", "gemma-3-270m-q4_k_m")
HF_NAME = "gemma-3-270m-hf-bf16"
MLX_NAME = "gemma-3-270m-mlx-q4g64"
BOS = 2


def gguf_tokens(path):
    """The `tokenizer.ggml.tokens` list of a GGUF file (v2/v3 header and metadata only)."""
    with open(path, "rb") as f:
        magic, version = f.read(4), struct.unpack("<I", f.read(4))[0]
        if magic != b"GGUF" or version not in (2, 3):
            sys.exit(f"{path}: not a GGUF v2/v3 file")
        _n_tensors, n_kv = struct.unpack("<QQ", f.read(16))
        fixed = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}

        def string():
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8")

        def value(t):
            if t in fixed:
                fmt = fixed[t]
                return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
            if t == 8:
                return string()
            if t == 9:
                (et,) = struct.unpack("<I", f.read(4))
                (n,) = struct.unpack("<Q", f.read(8))
                return [value(et) for _ in range(n)]
            sys.exit(f"{path}: metadata type {t}")

        for _ in range(n_kv):
            key = string()
            (t,) = struct.unpack("<I", f.read(4))
            v = value(t)
            if key == "tokenizer.ggml.tokens":
                return v
    sys.exit(f"{path}: no tokenizer.ggml.tokens")


def decode(tokens, ids):
    """SentencePiece decoding: pieces joined, `▁` → space, byte pieces `<0xNN>` → bytes."""
    out = bytearray()
    for i in ids:
        p = tokens[i]
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            out.append(int(p[3:5], 16))
        else:
            out += p.replace("\u2581", " ").encode("utf-8")
    return out.decode("utf-8", errors="replace")


def greedy(model, prompt_ids, eos, n=24):
    from mlx_lm.models.cache import make_prompt_cache
    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt_ids]), cache=cache)[0, -1]
    ids, summary = [], []
    for _ in range(n):
        l = np.array(logits.astype(mx.float32))
        best = int(np.argmax(l))
        summary.append(top5(l))
        if best in eos:
            return ids, True, summary
        ids.append(best)
        logits = model(mx.array([[best]]), cache=cache)[0, -1]
    return ids, False, summary


def perplexity(model, ids, n_ctx=512):
    nll, count = 0.0, 0
    first = n_ctx // 2
    for c in range(len(ids) // n_ctx):
        chunk = list(ids[c * n_ctx:(c + 1) * n_ctx])
        chunk[0] = BOS
        logits = model(mx.array([chunk]))[0].astype(mx.float32)
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        targets = mx.array(chunk[first + 1:])
        picked = mx.take_along_axis(logp[first:n_ctx - 1], targets[:, None], axis=-1)
        nll -= float(mx.sum(picked).item())
        count += n_ctx - 1 - first
    return math.exp(nll / count), len(ids) // n_ctx


def agreement(tokens, runs, cases):
    """mlx-lm's greedy tokens against llama.cpp's greedy text: per prompt, how many of
    mlx-lm's tokens decode to a prefix of llama.cpp's text, and where they fork, llama.cpp's
    next token among mlx-lm's top five at that step (the piece that continues llama.cpp's
    text) and how far below mlx-lm's top logit it is (`fork_gap`; null if not in the top five)."""
    per, agree_tokens, total = [], 0, 0
    for run, case in zip(runs, cases):
        want = case["greedy_text_24"]
        ids = run["greedy_ids_24"]
        k = 0
        while k < len(ids) and want.startswith(decode(tokens, ids[:k + 1])):
            k += 1
        same = decode(tokens, ids) == want
        entry = {"prompt": case["prompt"], "tokens": len(ids), "prefix_tokens": k,
                 "identical": same}
        if k < len(ids):
            step = run["top5"][k]
            done = decode(tokens, ids[:k])
            gap = None
            for cand, logit in zip(step["ids"], step["logits"]):
                text = decode(tokens, ids[:k] + [cand])
                if len(text) > len(done) and want.startswith(text):
                    gap = round(step["logits"][0] - logit, 4)
                    break
            entry["fork_gap"] = gap
        per.append(entry)
        agree_tokens += k
        total += len(ids)
    gaps = [p.get("fork_gap") for p in per if "fork_gap" in p]
    known = [g for g in gaps if g is not None]
    return {"prompts_identical": sum(p["identical"] for p in per), "prompts": len(per),
            "prefix_tokens": agree_tokens, "tokens": total,
            "worst_fork_gap": max(known) if len(known) == len(gaps) and known else None,
            "per_prompt": per}


def evaluate(d, tokens, cases, text_ids, quantized):
    from mlx_lm.utils import load_model, dequantize_model
    model, config = load_model(Path(d))
    if quantized:
        model = dequantize_model(model)
    eos = {int(config.get("eos_token_id", 1)), 106}  # <eos>, and <end_of_turn> (llama.cpp's EOG)
    runs = []
    for case in cases:
        ids, stopped, summary = greedy(model, case["prompt_token_ids"], eos)
        runs.append({"prompt": case["prompt"], "prompt_token_ids": case["prompt_token_ids"],
                     "greedy_ids_24": ids, "greedy_text_24": decode(tokens, ids),
                     "stopped_at_eos": stopped, "top5": summary})
    ppl, chunks = perplexity(model, text_ids)
    agree = agreement(tokens, runs, cases)
    print(f"{os.path.basename(d)}: ppl {ppl:.4f}; llama.cpp agreement "
          f"{agree['prefix_tokens']}/{agree['tokens']} tokens, "
          f"{agree['prompts_identical']}/{agree['prompts']} prompts identical", file=sys.stderr)
    return {
        "tensor_digest": tensor_digest(d),
        "evaluated": "quantized layers dequantized (mx.dequantize)" if quantized else "as loaded",
        "greedy": runs, "perplexity_512": round(ppl, 4), "chunks_512": chunks,
        "llama_cpp_agreement": agree,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gguf", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--record", required=True)
    p.add_argument("--plumb", default=os.path.join(ROOT, "target", "release", "plumb"))
    p.add_argument("--mlx-q4", action="store_true")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    hf = os.path.join(a.out, HF_NAME)
    subprocess.run([a.plumb, "quantize", "-m", a.gguf, "--hf", "bf16", "-o", hf], check=True)
    dirs = [(hf, False)]
    if a.mlx_q4:
        from mlx_lm import convert
        d = os.path.join(a.out, MLX_NAME)
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(d + ".partial", ignore_errors=True)
        convert(hf, mlx_path=d + ".partial", quantize=True, q_bits=4, q_group_size=64)
        os.rename(d + ".partial", d)
        dirs.append((d, True))
    tokens = gguf_tokens(a.gguf)
    with open(os.path.join(FIXTURES, "greedy.json")) as f:
        cases = json.load(f)
    with open(os.path.join(FIXTURES, "apache-2.0.tokens.json")) as f:
        text_ids = json.load(f)["token_ids"]
    out = {"mlx": mx.__version__, "mlx_lm": __import__("mlx_lm").__version__,
           "source": os.path.basename(a.gguf), "models": {}}
    for d, quantized in dirs:
        out["models"][os.path.basename(d)] = evaluate(d, tokens, cases, text_ids, quantized)
    with open(a.record, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
