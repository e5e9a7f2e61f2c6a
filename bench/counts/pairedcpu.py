#!/usr/bin/env python3
# pairedcpu.py FILE.json...: CPU per op of each variant vs its `...0` variant (e.g. ODIRECT_AUTO_REG=0),
# paired per round, from `odirect bench --json` (twentieth session: the automatic registration A/Bs).
import json,statistics,sys
for f in sys.argv[1:]:
    d=json.load(open(f))
    by={}
    for x in d['results']:
        by[(x['workload'],x['engine'].split(':')[-1])]=[r.get('cpuUsPerOp',float('nan')) for r in x['runs']]
    for (wl,e),v in sorted(by.items()):
        if e.endswith('0') and (wl,e[:-1]) in by:
            n=by[(wl,e[:-1])]
            pr=[b/a for a,b in zip(v,n)]
            print(f.split('/')[-1], wl, e[:-1], 'CPU/op new/old median %.3f (lower in %d/%d); medians %.2f -> %.2f us' % (statistics.median(pr), sum(p<1 for p in pr), len(pr), statistics.median(v), statistics.median(n)))
