#!/usr/bin/env python3
# threadcpu.py DELAY SPAN -- CMD...: run CMD, sample every thread of its process tree at DELAY and DELAY+SPAN:
# CPU ms (utime, stime) and voluntary/involuntary context switches per thread over the span.
import os, subprocess, sys, time
d, span = float(sys.argv[1]), float(sys.argv[2]); cmd = sys.argv[4:]
tck = os.sysconf('SC_CLK_TCK')
p = subprocess.Popen(cmd)
def tree(root):
    pids, todo = [], [root]
    while todo:
        x = todo.pop(); pids.append(x)
        try:
            for t in os.listdir(f'/proc/{x}/task'):
                try: todo += [int(c) for c in open(f'/proc/{x}/task/{t}/children').read().split()]
                except OSError: pass
        except OSError: pass
    return pids
def snap():
    out = {}
    for pid in tree(p.pid):
        try: tids = os.listdir(f'/proc/{pid}/task')
        except OSError: continue
        for t in tids:
            try:
                st = open(f'/proc/{pid}/task/{t}/stat').read()
                comm = st[st.index('(')+1:st.rindex(')')]; f = st[st.rindex(')')+2:].split()
                s = dict(l.split(':\t') for l in open(f'/proc/{pid}/task/{t}/status').read().splitlines() if ':\t' in l)
                out[int(t)] = (comm, int(f[11]), int(f[12]), int(s['voluntary_ctxt_switches']), int(s['nonvoluntary_ctxt_switches']))
            except (OSError, ValueError, KeyError): pass
    return out
time.sleep(d); a = snap(); time.sleep(span); b = snap()
p.wait()
rows = []
for t, v in b.items():
    u = a.get(t, (v[0], 0, 0, 0, 0))
    du, ds = (v[1]-u[1])*1000/tck, (v[2]-u[2])*1000/tck
    if du + ds > 0 or v[3]-u[3] > 100: rows.append((du+ds, t, v[0], du, ds, v[3]-u[3], v[4]-u[4]))
for r in sorted(rows, reverse=True): print('  %-16s tid %-7d cpu %6.0f ms (usr %5.0f sys %5.0f) vcs %7d ivcs %6d' % (r[2], r[1], r[0], r[3], r[4], r[5], r[6]))
