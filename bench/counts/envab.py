#!/usr/bin/env python3
# envab.py ROUNDS -- CMD... -- ENV [ENV...] (twenty-first session): runs CMD (which prints one JSON
# line with iops, cpu, ...) once per ENV each round, the order reversed every other round; ENV is
# `base` or K=V,K2=V2. Prints each ENV's medians and its ratios to the first ENV paired per round.
import json, os, statistics as st, subprocess, sys
a = sys.argv[1:]
rounds = int(a[0]); i = a.index('--', 1); j = a.index('--', i + 1)
cmd, envs = a[i + 1:j], a[j + 1:]
res = {e: [] for e in envs}
for r in range(rounds):
    for e in (envs if r % 2 == 0 else envs[::-1]):
        env = dict(os.environ)
        if e != 'base':
            env.update(kv.split('=', 1) for kv in e.split(','))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith('{')]
        if not line:
            print(e, 'failed', out.stderr[-500:]); continue
        res[e].append(json.loads(line[-1]))
print('load', os.getloadavg())
b = res[envs[0]]
for e in envs:
    v = res[e]
    keys = [k for k in ('iops', 'cpu', 'js') if k in v[0]]
    s = '  '.join(f"{k} {st.median(x[k] for x in v):.3f}" for k in keys)
    if e != envs[0]:
        for k in keys:
            p = [x[k] / y[k] for x, y in zip(v, b)]
            s += f"  {k}/base {st.median(p):.3f} ({sum(q > 1 for q in p)}/{len(p)} above)"
    print(f"{e:40} {s}  last {v[-1].get('stats', '')}")
