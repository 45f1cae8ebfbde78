#!/usr/bin/env python3
"""Compare two output folders written by scripts/outputs.sh (two builds of mambaq).

Bit-identity check: every logits file's top-10 ids and logits, and every evaluation's lm-eval
`results` (perplexity, accuracy, their standard errors) and mambaq's per-task figures (ppl, correct
counts, n) must be equal to the last bit; timings, dates and versions are ignored. Prints each
file's verdict and every differing figure; exits 1 when anything differs."""
import json, os, sys

IGNORED = {"seconds", "time_s", "tokens_per_s", "date", "git", "git_hash", "version"}


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in IGNORED}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def diff(p, q, path, out):
    if isinstance(p, dict) and isinstance(q, dict):
        for k in sorted(set(p) | set(q)):
            diff(p.get(k), q.get(k), f"{path}.{k}", out)
    elif p != q:
        out.append(f"{path}: {p!r} vs {q!r}")


a, b = sys.argv[1], sys.argv[2]
bad = 0
for name in sorted(os.listdir(a)):
    if not name.endswith(".json"):
        continue
    x = json.load(open(os.path.join(a, name)))
    y = json.load(open(os.path.join(b, name)))
    out = []
    if name.endswith(".logits.json"):
        diff({k: x[k] for k in ("ids", "top_ids", "top_logits")}, {k: y[k] for k in ("ids", "top_ids", "top_logits")},
             "", out)
    else:
        diff(strip(x["results"]), strip(y["results"]), "results", out)
        diff(strip(x["mambaq"].get("results", {})), strip(y["mambaq"].get("results", {})), "mambaq.results", out)
    print(f"{name:40s} {'identical' if not out else 'DIFFERS'}")
    for line in out:
        print("    " + line)
    bad += bool(out)
print("every figure bit-identical" if not bad else f"{bad} file(s) differ")
sys.exit(1 if bad else 0)
