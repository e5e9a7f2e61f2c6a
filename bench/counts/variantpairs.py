#!/usr/bin/env python3
# variantpairs.py LOG BASE OTHER [PER_ROUND] (twenty-first session): paired per round, from the
# `[k/N] WORKLOAD ENGINE [variant 'NAME']: V MB/s, C s CPU/GiB` lines of an `odirect bench` log
# (no --json needed): for each engine row of variant OTHER, its MB/s over BASE's row of the same
# engine in the same round (cells are interleaved within a round; a round is N / runs cells:
# PER_ROUND, default found from the first engine's repeats), median and range, rounds above 1,
# and both variants' median CPU per GiB. Also each variant row over the round's fio huge-page row.
import re, sys, statistics as st
log, base, other = sys.argv[1:4]
rows = []
for line in open(log):
    m = re.match(r"\[(\d+)/(\d+)\] (\S+) (.*?)(?: \[variant '([^']+)'\])?: ([\d.]+) MB/s, ([\d.]+) s CPU/GiB", line)
    if m: rows.append((int(m[1]), int(m[2]), m[3], m[4], m[5], float(m[6]), float(m[7])))
if not rows: sys.exit('no rows')
total = rows[0][1]
labels = {}
for k, n, w, e, v, mb, cpu in rows: labels.setdefault((e, v), []).append(k)
per = int(sys.argv[4]) if len(sys.argv) > 4 else total // len(next(iter(labels.values())))
cell = {}
for k, n, w, e, v, mb, cpu in rows: cell[((k - 1) // per, e, v)] = (mb, cpu)
rounds = sorted({r for r, _, _ in cell})
fio = next((e for (e, v) in labels if 'huge pages' in e and v is None), None)
for (e, v) in labels:
    if v != other: continue
    pr, cb, co, fb, fo = [], [], [], [], []
    for r in rounds:
        a, b = cell.get((r, e, base)), cell.get((r, e, other))
        if a and b:
            pr.append(b[0] / a[0]); cb.append(a[1]); co.append(b[1])
            f = cell.get((r, fio, None)) if fio else None
            if f: fb.append(a[0] / f[0]); fo.append(b[0] / f[0])
    if not pr: continue
    q = lambda x, d=2: f"{st.median(x):.{d}f} ({min(x):.{d}f}-{max(x):.{d}f})" if x else '-'
    print(f"{e}: {other}/{base} {q(pr, 3)}, {sum(x > 1 for x in pr)}/{len(pr)} above; CPU s/GiB {base} {st.median(cb):.2f} {other} {st.median(co):.2f}; vs fio huge {base} {q(fb)} {other} {q(fo)}")
