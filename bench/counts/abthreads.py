# abthreads.py ROUNDS SECS MODE RW PIN ENV ENV...: fiotmpfs.sh then tmpfsloop.mjs once per ENV set ("base" or
# K=V,K2=V2; order alternating per round) each round, PIN a CPU for taskset or -; file FILE (default
# /dev/shm/odirect-counts.dat, 256 MiB). Paired per round against the first ENV: IOPS, process and JS-thread CPU per op.
import json, os, statistics as st, subprocess, sys
HERE = os.path.dirname(os.path.abspath(__file__))
FILE = os.environ.get('FILE', '/dev/shm/odirect-counts.dat')
rounds, secs, mode, rw, pin = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
envs = sys.argv[6:]
pre = ['taskset', '-c', pin] if pin != '-' else []
res = {e: [] for e in envs}; fios = []
def fio():
    o = subprocess.run(pre + [os.path.join(HERE, 'fiotmpfs.sh'), secs, '--rw=' + ('randwrite' if rw == 'w' else 'randread')], capture_output=True, text=True).stdout
    return float(o.split()[1][:-1]) * 1000
for r in range(rounds):
    line = []
    f = fio(); fios.append(f); line.append('fio %.0fk' % (f / 1e3))
    for e in (envs if r % 2 == 0 else envs[::-1]):
        env = dict(os.environ)
        for kv in filter(None, e.split(',')):
            if kv != 'base': k, v = kv.split('='); env[k] = v
        o = subprocess.run(pre + ['node', os.path.join(HERE, 'tmpfsloop.mjs'), FILE, secs, mode, rw], capture_output=True, text=True, env=env).stdout
        j = json.loads(o.strip().splitlines()[-1]); res[e].append((j, f))
        line.append('%s %.0fk cpu %.2f js %.2f' % (e, j['iops'] / 1e3, j['cpu'], j['js']))
    print(' | '.join(line), flush=True)
print('load', open('/proc/loadavg').read().split()[:3])
base = envs[0]
for e in envs:
    R = res[e]
    print('%-40s iops med %.0fk  vs fio %.3f  cpu/op %.3f  js/op %.3f' % (e, st.median(j['iops'] for j, f in R) / 1e3, st.median(j['iops'] / f for j, f in R), st.median(j['cpu'] for j, f in R), st.median(j['js'] for j, f in R)))
    if e != base:
        pr = [a[0]['iops'] / b[0]['iops'] for a, b in zip(R, res[base])]
        pc = [a[0]['cpu'] / b[0]['cpu'] for a, b in zip(R, res[base])]
        pj = [a[0]['js'] / b[0]['js'] for a, b in zip(R, res[base])]
        print("   %s/%s per round: iops %.3f (%d/%d higher), cpu/op %.3f (%d/%d lower), js/op %.3f" % (e, base, st.median(pr), sum(p > 1 for p in pr), len(pr), st.median(pc), sum(p < 1 for p in pc), len(pc), st.median(pj)))
