#!/usr/bin/env python3
# blkstream.py CMD... (sixteenth session; root): runs CMD with block_rq_issue/complete traced in a
# trace instance of its own (wt-ts-blk, removed at the end) on vda (254,0: edit for another
# device), only the requests inside FILE's extents (env FILE, from filefrag) when set. Prints:
# requests and their sizes, mean requests and bytes in flight, device idle share and the longest
# idle gaps, request latency (issue to completion), the gap from a completion to the next
# request. A CMD that prints `T0 <mono s> T1 <mono s>` (CLOCK_MONOTONIC, e.g. process.hrtime)
# gets its events cut to [T0, ...] and the time before its first request / after its last
# completion. Used for the README's "What separates the stream rows from fio's, counted".
import os, sys, subprocess, re, collections
T='/sys/kernel/tracing/instances/wt-ts-blk'
if not os.path.isdir(T): os.mkdir(T)
def w(p, v):
    with open(os.path.join(T, p), 'w') as f: f.write(v)
w('tracing_on', '0'); w('buffer_size_kb', '65536'); w('trace_clock', 'mono'); w('trace', '')
for e in ('block_rq_issue', 'block_rq_complete'):
    w(f'events/block/{e}/filter', 'dev == %d' % ((254 << 20) | 0))
    w(f'events/block/{e}/enable', '1')
w('tracing_on', '1')
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
w('tracing_on', '0')
for e in ('block_rq_issue', 'block_rq_complete'): w(f'events/block/{e}/enable', '0')
out = open(os.path.join(T, 'trace')).read()
w('trace', '')
sys.stdout.write(r.stdout); sys.stderr.write(r.stderr[-2000:])
ev = []
rx = re.compile(r'\s(\d+\.\d+): (block_rq_issue|block_rq_complete): \d+,\d+ (\S+) (?:(\d+) )?\(.*?\) (\d+) \+ (\d+)')
rng = []
if os.environ.get('FILE'):
    fr = subprocess.run(['filefrag', '-v', os.environ['FILE']], capture_output=True, text=True).stdout
    for m in re.finditer(r'^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):', fr, re.M):
        rng.append((int(m.group(1)) * 8, (int(m.group(2)) + 1) * 8))
inr = lambda s: not rng or any(a <= s < b for a, b in rng)
for line in out.splitlines():
    m = rx.search(line)
    if not m: continue
    t = float(m.group(1)); kind = m.group(2); rwbs = m.group(3); sec = int(m.group(5)); n = int(m.group(6))
    if 'R' not in rwbs and 'W' not in rwbs: continue
    if n == 0 or not inr(sec): continue
    ev.append((t, kind == 'block_rq_issue', sec, n * 512, rwbs))
ev.sort()
m0 = re.search(r'T0 ([\d.]+) T1', r.stdout)
if m0: ev = [e for e in ev if e[0] >= float(m0.group(1))]
if os.environ.get("DBG"): [print(e) for e in ev[:int(os.environ["DBG"])]]
if not ev: print('no events'); sys.exit(0)
sizes = collections.Counter(); inf = 0; infb = 0; last = ev[0][0]; busy0 = 0.0; acc = 0.0; accb = 0.0
open_ = {}
maxinf = 0
gaps = []
issat = {}
lats = []
depth_t = collections.Counter()
for t, iss, sec, b, rwbs in ev:
    dt = t - last
    acc += inf * dt; accb += infb * dt
    depth_t[min(inf, 8)] += dt
    if inf == 0:
        busy0 += dt; gaps.append((dt, t - ev[0][0]))
    last = t
    if iss:
        sizes[b] += 1; inf += 1; infb += b; open_[sec] = b; maxinf = max(maxinf, inf); issat[sec] = t
    else:
        bb = open_.pop(sec, b); inf -= 1; infb -= bb
        if sec in issat: lats.append((t - issat.pop(sec)) * 1e6)
dur = ev[-1][0] - ev[0][0]
tot = sum(k * v for k, v in sizes.items())
print(f'reqs {sum(sizes.values())} bytes {tot/2**20:.0f} MiB dur {dur*1000:.0f} ms ({tot/dur/1e6:.0f} MB/s device-span) mean inflight {acc/dur:.2f} reqs {accb/dur/2**20:.2f} MiB; idle {busy0/dur*100:.1f}% max {maxinf}')
# Share of the span spent at each depth (requests at the device; 8 = 8 or more): is it ever
# below the job's depth, and for how long (eighteenth session).
print('time at depth:', ' '.join(f'{d}:{depth_t[d]/dur*100:.1f}%' for d in sorted(depth_t)))
print('sizes(KiB):', ', '.join(f'{k//1024}x{v}' for k, v in sizes.most_common(6)))
gaps.sort(reverse=True)
print('idle gaps (us @ ms):', ' '.join(f'{g*1e6:.0f}@{at*1000:.0f}' for g, at in gaps[:8]), f'n={len(gaps)}')
lats.sort()
if lats: print(f'latency us: p10 {lats[len(lats)//10]:.0f} p50 {lats[len(lats)//2]:.0f} p90 {lats[len(lats)*9//10]:.0f} mean {sum(lats)/len(lats):.0f}')
m = re.search(r'T0 ([\d.]+) T1 ([\d.]+)', r.stdout)
if m:
    t0, t1 = float(m.group(1)), float(m.group(2))
    print(f'clock {1000*(t1-t0):.1f} ms: before first issue {1000*(ev[0][0]-t0):.2f} ms, after last completion {1000*(t1-ev[-1][0]):.2f} ms')
turn = []
lastc = None
for t, iss, sec, b, rwbs in ev:
    if iss and lastc is not None:
        turn.append((t - lastc) * 1e6); lastc = None
    elif not iss and lastc is None:
        lastc = t
turn.sort()
if turn: print(f'completion->next issue us: p50 {turn[len(turn)//2]:.0f} p90 {turn[len(turn)*9//10]:.0f} p99 {turn[len(turn)*99//100]:.0f} max {turn[-1]:.0f} sum {sum(turn)/1000:.1f} ms n={len(turn)}')

try:
    os.rmdir(T)
except OSError:
    pass
