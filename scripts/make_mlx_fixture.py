#!/usr/bin/env python3
"""Hugging Face and MLX directories of the default model, and mlx-lm's outputs on them.

Builds, from the default GGUF (SmolLM2-135M-Instruct Q4_1, fetched by plumb's store into
~/.cache/plumb), three model directories under --out:

  smollm2-135m-hf-bf16       a Hugging Face checkpoint: the GGUF's weights dequantized by MLX
                             (mx.load reads GGUF; Q4_1 and Q8_0 become affine arrays whose
                             f32 dequantization is the GGUF's), rounded to bf16, Wq/Wk rows put
                             back in Hugging Face order (the GGUF converter interleaves each
                             head's halves), tokenizer.json / tokenizer_config.json /
                             generation_config.json written from the GGUF's tokenizer metadata;
  smollm2-135m-mlx-q4g64     mlx-lm's conversion of that directory, 4-bit groups of 64;
  smollm2-135m-mlx-mixed36   mlx-lm's "mixed_3_6" recipe (3-bit groups of 64, some layers
                             6-bit: per-module entries in config.json).

With --record FILE it also runs mlx-lm on each directory and writes FILE (JSON): per directory
the digest of its tensors (`tensor_digest`), the greedy continuation (24 tokens, mlx-lm's
model and argmax) of the 8 prompts of fixtures/smollm2-135m-instruct-q4_1/greedy.json with
the five largest logits of every step (so a test can feed mlx-lm's tokens back and see where
its own top token differs, and by how much), and the perplexity of apache-2.0.txt at context
512 (llama.cpp's procedure, see that fixture's README).

With --vectors FILE it writes MLX's own quantization of a few small matrices (every bits ×
group size, f32 and bf16 inputs: `mx.quantize`'s codes, scales and biases and
`mx.dequantize`'s output in f32) as one safetensors file, for bit-for-bit tests of plumb's
affine quantizer and dequantization.

The directories are deterministic (same GGUF, same mlx and mlx-lm versions), and plumb
rebuilds them itself (`plumb quantize`); the tensor digests prove that its directories hold
the tensors mlx-lm's figures were measured on, so the multi-megabyte directories need not
be kept.

Usage: make_mlx_fixture.py --gguf PATH --out DIR [--record FILE] [--vectors FILE] [--reuse]
Needs mlx, mlx-cpu, mlx-lm (and their numpy, transformers, tokenizers) importable, e.g.
    python3 -m pip install --target /tmp/mlx mlx==0.32.4 mlx-cpu==0.32.4 mlx-lm==0.32.2
    PYTHONPATH=/tmp/mlx python3 scripts/make_mlx_fixture.py --gguf ~/.cache/plumb/... \
        --out /tmp/mlx-dirs --record fixtures/mlx/record.json --vectors fixtures/mlx/affine.safetensors
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import struct
import sys

import numpy as np
import mlx.core as mx

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "smollm2-135m-instruct-q4_1")
HF_NAME = "smollm2-135m-hf-bf16"
MLX_SETTINGS = {
    "smollm2-135m-mlx-q4g64": dict(q_bits=4, q_group_size=64),
    "smollm2-135m-mlx-mixed36": dict(q_group_size=64, quant_predicate="mixed_3_6"),
}


def scalar(v):
    return v.item() if isinstance(v, mx.array) else v


def hf_name(gguf):
    fixed = {
        "token_embd": "model.embed_tokens",
        "output_norm": "model.norm",
        "output": "lm_head",
    }
    stem, suffix = gguf.rsplit(".", 1)
    if stem in fixed:
        return f"{fixed[stem]}.{suffix}"
    _, layer, part = stem.split(".", 2)
    part = {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }[part]
    return f"model.layers.{layer}.{part}.{suffix}"


def unpermute(w, n_heads):
    """GGUF rows (head, pair i, half j) back to Hugging Face rows (head, half j, pair i)."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def gguf_weights(gguf):
    """The GGUF's tensors dequantized to f32 (scales widened first, so the arithmetic is
    f32 as the GGUF's own dequantization), keyed by GGUF name, and its metadata."""
    arrays, meta = mx.load(gguf, return_metadata=True)
    out = {}
    for name, a in arrays.items():
        if name.endswith((".scales", ".biases")):
            continue
        stem = name[: -len(".weight")]
        if stem + ".scales" in arrays:
            s = arrays[stem + ".scales"].astype(mx.float32)
            b = arrays[stem + ".biases"].astype(mx.float32)
            # mx.load makes groups of 32 (one GGUF block): cols = 32 × groups.
            bits = a.shape[1] * 32 // (32 * s.shape[1])
            a = mx.dequantize(a, s, b, group_size=32, bits=bits)
        out[name] = a.astype(mx.float32)
    return out, meta


def tokenizer_files(meta, out):
    tokens = meta["tokenizer.ggml.tokens"]
    types = np.array(meta["tokenizer.ggml.token_type"]).tolist()
    merges = meta["tokenizer.ggml.merges"]
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, k) in enumerate(zip(tokens, types)) if k == 3
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": list(merges)},
    }
    bos = tokens[int(scalar(meta["tokenizer.ggml.bos_token_id"]))]
    eos_id = int(scalar(meta["tokenizer.ggml.eos_token_id"]))
    files = {
        "tokenizer.json": tok,
        "tokenizer_config.json": {
            "add_bos_token": bool(scalar(meta["tokenizer.ggml.add_bos_token"])),
            "add_prefix_space": False, "bos_token": bos, "eos_token": tokens[eos_id],
            "pad_token": tokens[int(scalar(meta["tokenizer.ggml.padding_token_id"]))],
            "unk_token": tokens[int(scalar(meta["tokenizer.ggml.unknown_token_id"]))],
            "chat_template": meta["tokenizer.chat_template"],
            "clean_up_tokenization_spaces": False, "model_max_length": 8192,
            "tokenizer_class": "GPT2Tokenizer",
        },
        "generation_config.json": {
            "bos_token_id": int(scalar(meta["tokenizer.ggml.bos_token_id"])),
            "eos_token_id": eos_id,
        },
    }
    for name, body in files.items():
        with open(os.path.join(out, name), "w") as f:
            json.dump(body, f, ensure_ascii=False, indent=1)


def write_hf(gguf, out):
    weights, meta = gguf_weights(gguf)
    m = lambda k: scalar(meta[f"llama.{k}"])
    n_heads, n_kv = int(m("attention.head_count")), int(m("attention.head_count_kv"))
    tensors = {}
    for name, a in weights.items():
        if name.endswith("attn_q.weight"):
            a = unpermute(a, n_heads)
        elif name.endswith("attn_k.weight"):
            a = unpermute(a, n_kv)
        tensors[hf_name(name)] = a.astype(mx.bfloat16)
    tied = "output.weight" not in weights
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": int(m("embedding_length")),
        "intermediate_size": int(m("feed_forward_length")),
        "num_attention_heads": n_heads, "num_key_value_heads": n_kv,
        "num_hidden_layers": int(m("block_count")),
        "head_dim": int(m("rope.dimension_count")),
        "vocab_size": int(m("vocab_size")),
        "max_position_embeddings": int(m("context_length")),
        "rms_norm_eps": float(m("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(m("rope.freq_base")), "rope_scaling": None,
        "tie_word_embeddings": tied, "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "torch_dtype": "bfloat16",
        "bos_token_id": int(scalar(meta["tokenizer.ggml.bos_token_id"])),
        "eos_token_id": int(scalar(meta["tokenizer.ggml.eos_token_id"])),
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    mx.save_safetensors(os.path.join(out, "model.safetensors"), tensors,
                        metadata={"format": "mlx"})
    tokenizer_files(meta, out)


def check_tokenizer(hf_dir):
    """The written tokenizer.json reproduces the GGUF fixture's token ids exactly."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    with open(os.path.join(FIXTURES, "apache-2.0.txt")) as f:
        text = f.read()
    with open(os.path.join(FIXTURES, "apache-2.0.tokens.json")) as f:
        want = json.load(f)["token_ids"]
    got = tok.encode(text, add_special_tokens=False).ids
    if got != want:
        sys.exit("tokenizer.json does not reproduce apache-2.0.tokens.json")


def tensor_digest(d):
    """sha256 over the directory's tensors in name order: for each, its name, dtype and shape
    (`name\0DTYPE\0d0,d1\0`) then its raw bytes. Independent of the file's header layout
    and of how tensors are split into shards."""
    entries = []
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        path = os.path.join(d, f)
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                entries.append((name, info, path, 8 + n))
    h = hashlib.sha256()
    for name, info, path, base in sorted(entries):
        lo, hi = info["data_offsets"]
        with open(path, "rb") as fh:
            fh.seek(base + lo)
            data = fh.read(hi - lo)
        shape = ",".join(str(x) for x in info["shape"])
        h.update(f"{name}\0{info['dtype']}\0{shape}\0".encode())
        h.update(data)
    return h.hexdigest()


def top5(l):
    idx = np.argsort(-np.array(l), kind="stable")[:5]
    return {"ids": [int(i) for i in idx], "logits": [round(float(l[i]), 4) for i in idx]}


def greedy(model, prompt_ids, eos, n=24):
    from mlx_lm.models.cache import make_prompt_cache
    cache = make_prompt_cache(model)
    logits = model(mx.array([prompt_ids]), cache=cache)[0, -1]
    ids, summary = [], []
    for _ in range(n):
        l = np.array(logits.astype(mx.float32))
        best = int(np.argmax(l))
        summary.append(top5(l))
        if best == eos:
            return ids, True, summary
        ids.append(best)
        logits = model(mx.array([[best]]), cache=cache)[0, -1]
    return ids, False, summary


def perplexity(model, ids, n_ctx=512):
    nll, count = 0.0, 0
    first = n_ctx // 2
    for c in range(len(ids) // n_ctx):
        chunk = ids[c * n_ctx:(c + 1) * n_ctx]
        logits = model(mx.array([chunk]))[0].astype(mx.float32)
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        for pos in range(first, n_ctx - 1):
            nll -= float(logp[pos, chunk[pos + 1]].item())
            count += 1
    return math.exp(nll / count), len(ids) // n_ctx


def model_config(d):
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f)


def record(dirs, path):
    from mlx_lm import load
    with open(os.path.join(FIXTURES, "greedy.json")) as f:
        cases = json.load(f)
    with open(os.path.join(FIXTURES, "apache-2.0.tokens.json")) as f:
        text_ids = json.load(f)["token_ids"]
    out = {"mlx": mx.__version__, "mlx_lm": __import__("mlx_lm").__version__, "models": {}}
    from mlx_lm.utils import dequantize_model
    for d in dirs:
        model, tok = load(d)
        quantized = "quantization" in model_config(d)
        if quantized:
            # mlx-cpu's quantized matmul runs at seconds per token on a small x86 machine,
            # too slow for 2,048 perplexity tokens; the layers are evaluated with their
            # mx.dequantize weights instead: the same bf16 values the quantized kernel forms
            # (s·q + b in the scales' type), multiplied by MLX's dense bf16 matmul.
            model = dequantize_model(model)
        eos = tok.eos_token_id
        runs = []
        for case in cases:
            ids, stopped, summary = greedy(model, case["prompt_token_ids"], eos)
            runs.append({"prompt": case["prompt"], "prompt_token_ids": case["prompt_token_ids"],
                         "greedy_ids_24": ids, "greedy_text_24": tok.decode(ids),
                         "stopped_at_eos": stopped, "top5": summary})
        ppl, chunks = perplexity(model, text_ids)
        out["models"][os.path.basename(d)] = {
            "tensor_digest": tensor_digest(d),
            "evaluated": "quantized layers dequantized (mx.dequantize)" if quantized else "as loaded",
            "greedy": runs, "perplexity_512": round(ppl, 4), "chunks_512": chunks,
        }
        print(f"{os.path.basename(d)}: ppl {ppl:.4f}", file=sys.stderr)
    with open(path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


def vectors(path):
    """MLX's quantization of small matrices: for every bits × group size and input dtype
    (`x.f32`, `x.bf16`: the inputs), `{tag}.q`, `.scales`, `.biases` (mx.quantize) and `.deq`
    (mx.dequantize with the scales and biases widened to f32, in f32)."""
    rng = np.random.default_rng(20261202)
    rows = [
        rng.normal(0.0, 0.05, 256),                         # a weight-like row
        rng.uniform(0.1, 1.0, 256),                         # all positive
        np.concatenate([rng.uniform(-1.0, -0.1, 255), [3.0]]),  # negative, one outlier
        np.concatenate([np.full(128, 0.25), np.zeros(128)]),    # constant groups
    ]
    x32 = mx.array(np.stack(rows).astype(np.float32))
    out = {}
    for dtype, name in [(mx.float32, "f32"), (mx.bfloat16, "bf16")]:
        x = x32.astype(dtype)
        out[f"x.{name}"] = x
        for bits in [2, 3, 4, 5, 6, 8]:
            for group in [32, 64, 128]:
                q, s, b = mx.quantize(x, group_size=group, bits=bits)
                deq = mx.dequantize(q, s.astype(mx.float32), b.astype(mx.float32),
                                    group_size=group, bits=bits)
                tag = f"b{bits}_g{group}_{name}"
                out.update({f"{tag}.q": q, f"{tag}.scales": s,
                            f"{tag}.biases": b, f"{tag}.deq": deq.astype(mx.float32)})
    mx.save_safetensors(path, out, metadata={"mlx": mx.__version__})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gguf")
    p.add_argument("--out")
    p.add_argument("--record")
    p.add_argument("--vectors")
    p.add_argument("--reuse", action="store_true",
                   help="keep directories already built under --out")
    a = p.parse_args()
    if a.vectors:
        vectors(a.vectors)
    if not (a.gguf and a.out):
        if a.record or not a.vectors:
            p.error("--gguf and --out are needed to build the directories")
        return
    from mlx_lm import convert
    hf = os.path.join(a.out, HF_NAME)
    names = [HF_NAME] + list(MLX_SETTINGS)
    if a.reuse and all(os.path.isdir(os.path.join(a.out, n)) for n in names):
        if a.record:
            record([os.path.join(a.out, n) for n in names], a.record)
        return
    tmp = hf + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    write_hf(a.gguf, tmp)
    check_tokenizer(tmp)
    shutil.rmtree(hf, ignore_errors=True)
    os.rename(tmp, hf)
    dirs = [hf]
    for name, opts in MLX_SETTINGS.items():
        d = os.path.join(a.out, name)
        shutil.rmtree(d, ignore_errors=True)
        convert(hf, mlx_path=d + ".partial", quantize=True, **opts)
        os.rename(d + ".partial", d)
        dirs.append(d)
    if a.record:
        record(dirs, a.record)


if __name__ == "__main__":
    main()
