#!/usr/bin/env python3
"""Compare two output folders written by scripts/outputs.sh (two builds of mambaq).

Bounds (the redesign issue's): top-10 ids identical and logits within 2e-3; perplexity within
1e-4 relative in fp32 and 1e-3 in fake/int8; last-word counts identical. Prints every figure and
its difference; exits 1 when a bound is missed."""
import json, os, sys

a, b = sys.argv[1], sys.argv[2]
bad = 0
for name in sorted(os.listdir(a)):
    if not name.endswith(".json"):
        continue
    x = json.load(open(os.path.join(a, name)))
    y = json.load(open(os.path.join(b, name)))
    quant = ".fake." in name or ".int8." in name
    if name.endswith(".logits.json"):
        same = x["top_ids"] == y["top_ids"]
        d = max(abs(p - q) for p, q in zip(x["top_logits"], y["top_logits"]))
        ok = same and d <= 2e-3
        print(f"{name:40s} top-10 ids {'same' if same else 'DIFFER'}  max |dlogit| {d:.3g}  {'ok' if ok else 'FAIL'}")
    else:
        ok = True
        for task, r in x["results"].items():
            s = y["results"][task]
            rel = abs(r["ppl"] - s["ppl"]) / r["ppl"]
            bound = 1e-3 if quant else 1e-4
            t_ok = rel <= bound and r.get("correct") == s.get("correct")
            ok &= t_ok
            extra = f" correct {r.get('correct')} vs {s.get('correct')}" if "correct" in r else ""
            print(f"{name:40s} {task:9s} ppl {r['ppl']:.6f} vs {s['ppl']:.6f} rel {rel:.2e} (<= {bound:g}){extra}"
                  f"  {'ok' if t_ok else 'FAIL'}")
    bad += not ok
print("all within bounds" if not bad else f"{bad} file(s) outside the bounds")
sys.exit(1 if bad else 0)
