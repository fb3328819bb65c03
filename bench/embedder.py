"""The semantic cache's local embedder (faregate.cache.embedder): load, memory, latency, fidelity.

    .venv/bin/python bench/embedder.py [--threads N]

Prints the load time and the RSS it adds (VmRSS from /proc/self/status), the latency of one short
sentence at a time (p50/p99 over ~300), the throughput in batches of 32, and how far the int8
vectors are from the fp32 model's (cosine, ~50 sentences; the fp32 forward is the numpy one in
tests/test_embedder.py). Runs in well under a minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faregate.cache.embedder import LocalEmbedder  # noqa: E402
from tests.test_embedder import Fp32MiniLM, gt_model_dir  # noqa: E402

SUBJECTS = ["my password", "the invoice", "a Python script", "the Kubernetes cluster",
            "our refund policy", "the quarterly report", "a SQL query", "the API rate limit",
            "my flight booking", "the onboarding email"]
ASKS = ["How do I reset {}?", "Can you summarise {} in two sentences?", "Why does {} keep failing?",
        "Write a short note about {}.", "What is the best way to fix {}?",
        "Explain {} to a new colleague.", "Translate {} into French, please.",
        "Who is responsible for {}?", "When was {} last updated?", "Give me three facts about {}.",
        "Is there a faster way to check {}?", "Compare {} with last year's version.",
        "List the steps to update {}.", "What went wrong with {} yesterday?",
        "Draft a reply about {} to the customer.", "How much does {} cost per month?",
        "Where can I find {}?", "Can {} be automated?", "Please review {} for mistakes.",
        "What are the risks of changing {}?", "Tell me a joke about {}.",
        "Turn {} into a checklist.", "Why is {} slower than before?",
        "Show an example of {}.", "Should we delete {}?", "Describe {} in one word.",
        "How do I share {} with my team?", "Make {} more formal.", "Find the bug in {}.",
        "Estimate the time needed for {}."]
SENTENCES = [a.format(s) for a in ASKS for s in SUBJECTS]  # 300 short prompts, 8-16 tokens


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--fidelity", type=int, default=50, help="sentences for the fp32 check")
    args = parser.parse_args()

    import onnxruntime  # noqa: F401  # imports out of the load figure, RSS included
    import tokenizers  # noqa: F401

    rss0, t0 = rss_mb(), time.perf_counter()
    embedder = LocalEmbedder(threads=args.threads)
    load_s, rss_load = time.perf_counter() - t0, rss_mb() - rss0
    print(f"model          {embedder.name}, dim {embedder.dim}, threads {args.threads}")
    print(f"load           {load_s:.3f} s (sha256 of both files included)")
    print(f"rss            +{rss_load:.1f} MB after load (imports excluded)")

    embedder.embed(SENTENCES[:10])  # warm-up
    lat = []
    for s in SENTENCES:
        t = time.perf_counter()
        embedder.embed([s])
        lat.append((time.perf_counter() - t) * 1000)
    p50, p99 = np.percentile(lat, [50, 99])
    print(f"single         p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(lat)} sentences, one at a time)")

    t = time.perf_counter()
    rounds = 3
    for _ in range(rounds):
        for i in range(0, len(SENTENCES), 32):
            embedder.embed(SENTENCES[i : i + 32])
    rate = rounds * len(SENTENCES) / (time.perf_counter() - t)
    print(f"batch of 32    {rate:.0f} sentences/s")
    print(f"rss            +{rss_mb() - rss0:.1f} MB after the runs")

    if args.fidelity:
        texts = SENTENCES[:: max(1, len(SENTENCES) // args.fidelity)][: args.fidelity]
        texts += ["The gateway forwards each request to the upstream provider. " * 40, ""]
        reference = Fp32MiniLM(gt_model_dir(), embedder)
        cos = (embedder.embed(texts) * reference.embed(texts)).sum(axis=1)
        print(f"int8 vs fp32   cosine mean {cos.mean():.4f}, min {cos.min():.4f} "
              f"({len(texts)} texts incl. a 256-token one and an empty one)")


if __name__ == "__main__":
    main()
