#!/usr/bin/env python3
# streampaired.py FILE.json [BASE] (eighteenth session): the stream rows of `odirect bench --json`
# paired per round: each row's MB/s over fio's huge-page row of the same round (median and range
# of the per-round ratios), over the BASE variant's row of the same engine (default 'base'), CPU
# s/GiB and peak RSS growth (median, max).
import json, sys, statistics as st
j = json.load(open(sys.argv[1]))
base = sys.argv[2] if len(sys.argv) > 2 else 'base'
cells = j['streams']
def key(c): return (c['workload'], c['engine'], c.get('variant'))
by = {key(c): c for c in cells}
def rounds(c): return {r.get('round'): r for r in c.get('runs', [])}
for c in cells:
    w, e, v = key(c)
    fio = by.get((w, 'fio-io_uring-huge', None))
    if fio is None or not c.get('runs'): continue
    fr = rounds(fio); cr = rounds(c)
    rf = [cr[k]['mbps'] / fr[k]['mbps'] for k in cr if k in fr]
    b = by.get((w, e, base)) if v is not None else None
    rb = []
    if b is not None and v != base:
        br = rounds(b); rb = [cr[k]['mbps'] / br[k]['mbps'] for k in cr if k in br]
    med = lambda a: st.median(a) if a else float('nan')
    cpu = [r['cpuPerGiB'] for r in c['runs'] if isinstance(r.get('cpuPerGiB'), (int, float))]
    rss = [r['rssGrowthMiB'] for r in c['runs'] if isinstance(r.get('rssGrowthMiB'), (int, float))]
    s = f"{w:12} {e:24} {str(v or ''):8} MB/s {med([r['mbps'] for r in c['runs']]):6.0f}  vs fio {med(rf):.3f} ({min(rf):.2f}-{max(rf):.2f})"
    if rb: s += f"  vs {base} {med(rb):.3f} ({sum(x > 1 for x in rb)}/{len(rb)} above)"
    if cpu: s += f"  cpu {med(cpu):.3f}"
    if rss: s += f"  rss {med(rss):.1f}/{max(rss):.1f}"
    print(s)
