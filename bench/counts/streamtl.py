#!/usr/bin/env python3
# streamtl.py CMD... (twentieth session; root): runs CMD (e.g. node bench/counts/streamtl.js FILE) with the disk's block requests (vda, 254,0) traced in one trace instance and the process tree's io_uring_enter / epoll_pwait / mmap / munmap / madvise in another; prints the pass's device span, idle time, the device's rate while busy, mean depth, time to the first request and idle stalls over STALL s (default 0.0005), then a timeline of requests, completions, syscalls and chunk deliveries from AT s after T0 for SPAN s (env; defaults 0.1 and 0.02).
import os, sys, subprocess, re
TB='/sys/kernel/tracing/instances/odirect-streamtl-b'; TS='/sys/kernel/tracing/instances/odirect-streamtl-s'
for T in (TB, TS):
    if not os.path.isdir(T): os.mkdir(T)
def w(p, v, T=None):
    for X in ([T] if T else [TB, TS]):
        with open(os.path.join(X, p), 'w') as f: f.write(v)
w('tracing_on', '0'); w('buffer_size_kb', '65536'); w('trace_clock', 'mono'); w('trace', '')
blk = ['block/block_rq_issue', 'block/block_rq_complete']
sysv = ['syscalls/sys_enter_io_uring_enter','syscalls/sys_exit_io_uring_enter','syscalls/sys_enter_epoll_pwait','syscalls/sys_exit_epoll_pwait', 'syscalls/sys_enter_mmap', 'syscalls/sys_exit_mmap','syscalls/sys_enter_madvise','syscalls/sys_exit_madvise','syscalls/sys_enter_munmap']
for e in blk:
    w(f'events/{e}/filter', 'dev == %d' % ((254 << 20) | 0), TB); w(f'events/{e}/enable', '1', TB)
w('options/event-fork', '1', TS); w('set_event_pid', str(os.getpid()), TS)
for e in sysv: w(f'events/{e}/enable', '1', TS)
w('tracing_on', '1')
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
w('tracing_on', '0')
for e in blk: w(f'events/{e}/enable', '0', TB)
for e in sysv: w(f'events/{e}/enable', '0', TS)
w('set_event_pid', '', TS)
out = open(os.path.join(TB, 'trace')).read() + open(os.path.join(TS, 'trace')).read(); w('trace', '')
os.rmdir(TB); os.rmdir(TS)
sys.stderr.write(r.stderr[-2000:])
m = re.search(r'T0 ([\d.]+) T1 ([\d.]+)', r.stdout); t0, t1 = float(m.group(1)), float(m.group(2))
print(r.stdout.splitlines()[0])
js = [float(x) for x in re.search(r'^JS (.*)$', r.stdout, re.M).group(1).split()]
ev = []
for x in js: ev.append((x, 'JS chunk'))
for line in out.splitlines():
    mm = re.search(r'^\s*(.+?)-(\d+)\s+\[\d+\]\s+\S+\s+(\d+\.\d+): (\w+)(.*)$', line)
    if not mm: continue
    comm, pid, t, name, rest = mm.groups(); t = float(t)
    if name.startswith('block_rq'):
        b = re.search(r'(\d+) \+ (\d+)', rest)
        if not b or int(b.group(2)) == 0: continue
        ev.append((t, '%s %s KiB' % ('ISSUE' if 'issue' in name else 'DONE ', int(b.group(2)) // 2)))
    else:
        short = name.replace('sys_', '')
        if short in ('mmap', 'munmap', 'madvise') and '->' not in rest: short += rest[:60]
        a = re.search(r'to_submit: (\w+), min_complete: (\w+)', rest)
        if a: short += ' sub=%d min=%d' % (int(a.group(1), 16), int(a.group(2), 16))
        x = re.search(r'-> (\S+)', rest)
        if x: short += ' -> ' + x.group(1)
        ev.append((t, '%s/%s %s' % (comm[:10], pid, short)))
ev.sort()
dev = sorted((t, s) for t, s in ev if s.startswith(('ISSUE', 'DONE')) and t >= t0)
inf = 0; lastt = None; stalls = []; idle = 0; nb = 0; depth_t = 0
for t, s in dev:
    if lastt is not None:
        if inf == 0: idle += t - lastt
        depth_t += inf * (t - lastt)
    if inf == 0 and lastt is not None and t - lastt > float(os.environ.get('STALL', '0.0005')): stalls.append(((lastt - t0) * 1e3, (t - lastt) * 1e3))
    if s.startswith('ISSUE'): inf += 1; nb += int(s.split()[1]) * 1024
    else: inf -= 1
    lastt = t
span = dev[-1][0] - dev[0][0]
print('clock %.1f ms, device span %.1f ms, idle %.1f ms, busy rate %.0f MB/s, mean depth %.2f, after last %.2f ms' % ((t1 - t0) * 1e3, span * 1e3, idle * 1e3, nb / (span - idle) / 1e6, depth_t / span, (t1 - dev[-1][0]) * 1e3))
first = dev[0][0] if dev else t0
print('first issue %.2f ms; idle stalls > %s s: %d, %.1f ms: %s' % ((first - t0) * 1e3, os.environ.get('STALL', '0.0005'), len(stalls), sum(x[1] for x in stalls), ' '.join('%.2f@%.1f' % (d, a) for a, d in stalls[:20])))
lo = t0 + float(os.environ.get('AT', '0.1')); hi = lo + float(os.environ.get('SPAN', '0.02'))
prev = None
for t, s in ev:
    if lo <= t <= hi:
        print('%9.3f ms %+8.0f us  %s' % ((t - t0) * 1e3, (t - prev) * 1e6 if prev else 0, s)); prev = t
