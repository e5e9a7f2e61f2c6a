#!/usr/bin/env python3
# oppaired.py FILE.json [BASE] (eighteenth session): the engine rows of `odirect bench --json`
# paired per round: each row's median, p50/p99, CPU per op, its ratio to fio's huge-page row (or
# the workload's reference fio row) per round (median, range), and to the BASE variant's row.
import json, sys, statistics as st
j = json.load(open(sys.argv[1]))
base = sys.argv[2] if len(sys.argv) > 2 else 'base'
res = j['results']
def name(c): return c['engine']
def variant(c): return c['engine'][8:] if c['engine'].startswith('variant:') else None
def val(r): return r['bytes'] / r['seconds'] if r.get('bytes') else r['ops'] / r['seconds']
for w in dict.fromkeys(c['workload'] for c in res):
    cells = [c for c in res if c['workload'] == w]
    ref = next((c for c in cells if c['engine'] == c.get('fioReference')), None)
    b = next((c for c in cells if variant(c) == base), None)
    rr = {r['round']: val(r) for r in ref['runs']} if ref else {}
    br = {r['round']: val(r) for r in b['runs']} if b else {}
    print(w)
    for c in cells:
        cr = {r['round']: val(r) for r in c['runs']}
        f = [cr[k] / rr[k] for k in cr if k in rr]
        s = f"  {name(c):34} {c['median']:10.0f} p50 {c.get('p50Us') or 0:7.0f} p99 {c.get('p99Us') or 0:7.0f} cpu/op {c.get('cpuUsPerOp') or 0:6.1f}  vs fio {st.median(f):.3f} ({min(f):.2f}-{max(f):.2f})"
        if b is not None and c is not b and variant(c):
            x = [cr[k] / br[k] for k in cr if k in br]
            s += f"  vs {base} {st.median(x):.3f} ({sum(v > 1 for v in x)}/{len(x)} above)"
        print(s)
