#!/usr/bin/env python3
"""How many of the habit pairs refine reports are real (issue 8, docs/near.md).

usage: scripts/habit-recovery.py OUT [DATA]
  OUT   the folder scripts/levers-table.sh wrote (reads OUT/runs/seed*/refined-{confusion,verified,all}.json)
  DATA  cub26 folder (default ../shared/data/cub26 beside the checkout)

A pair (true class, named class) is real when that wrong name makes up >= 10 % of the
class's answers in the log (truth read from DATA/manifest.csv through the image symlinks).
Prints per row and seed: pairs reported, of them real, real pairs, of them found.
"""
import collections, glob, json, os, sys

out = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cub26")
man = os.path.join(data, "manifest.csv")
base = os.path.dirname(os.path.abspath(man))
lab = {}
for line in list(open(man))[1:]:
    f = line.strip().split(",")
    lab[os.path.realpath(os.path.join(base, f[0]))] = f[1]
for tag in ["confusion", "verified", "all"]:
    res = []
    for path in sorted(glob.glob(f"{out}/runs/seed*/refined-{tag}.json")):
        r = json.load(open(path))
        cl = r["classes"]
        truth = [lab[os.path.realpath(os.path.join(r["images_dir"], im["path"]))] for im in r["images"]]
        wrong, tot = collections.Counter(), collections.Counter()
        for im, t in zip(r["images"], truth):
            for c, share in im["own"]:
                if cl[c] != t:
                    wrong[(t, cl[c])] += share
            tot[t] += 1
        real = {p for p, n in wrong.items() if n / tot[p[0]] >= 0.10}
        est = {(h["true_name"], h["named_name"]) for h in r["confusion"]["habits"]}
        res.append((len(est), len(est & real), len(real), len(real & est)))
    print(tag, "per seed (reported, of them real, real pairs, of them found):", res)
