#!/usr/bin/env python3
# sysstream.py CMD... (sixteenth session; root): io_uring_enter, mmap, munmap, madvise,
# epoll_pwait and statx of CMD's threads (set_event_pid + event-fork, a trace instance of its own,
# wt-ts-sys, removed at the end). CMD must print `T0 <mono s> T1 <mono s>` (CLOCK_MONOTONIC).
# Default: a timeline of the first MS (env, 15) ms after T0. SUM=1: per thread and call, the
# count, total and longest time inside (io_uring_enter+ = calls that submitted), over [T0, T1].
import os, sys, subprocess, re
T='/sys/kernel/tracing/instances/wt-ts-sys'
if not os.path.isdir(T): os.mkdir(T)
def w(p, v):
    with open(os.path.join(T, p), 'w') as f: f.write(v)
w('tracing_on', '0'); w('buffer_size_kb', '65536'); w('trace_clock', 'mono'); w('trace', '')
w('options/event-fork', '1'); w('set_event_pid', str(os.getpid()))
evs = ['syscalls/sys_enter_io_uring_enter','syscalls/sys_exit_io_uring_enter','syscalls/sys_enter_mmap','syscalls/sys_exit_mmap','syscalls/sys_enter_munmap','syscalls/sys_exit_munmap','syscalls/sys_enter_madvise','syscalls/sys_exit_madvise','syscalls/sys_enter_epoll_pwait','syscalls/sys_exit_epoll_pwait','syscalls/sys_enter_statx','syscalls/sys_exit_statx']
for e in evs: w(f'events/{e}/enable', '1')
w('tracing_on', '1')
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
w('tracing_on', '0')
for e in evs: w(f'events/{e}/enable', '0')
w('set_event_pid', '')
out = open(os.path.join(T, 'trace')).read(); w('trace', '')
sys.stdout.write(r.stdout); sys.stderr.write(r.stderr[-2000:])
m = re.search(r'T0 ([\d.]+) T1 ([\d.]+)', r.stdout)
t0 = float(m.group(1)); lim = float(os.environ.get('MS', '15')) / 1000
summ = os.environ.get('SUM'); st = {}; durs = {}
for line in out.splitlines():
    mm = re.match(r'\s*(\S+)-(\d+)\s+\[\d+\]\s+\S+\s+([\d.]+): (\w+)(.*)', line)
    if not mm: continue
    t = float(mm.group(3))
    if summ:
        if not (t0 <= t <= float(m.group(2))): continue
        key = (mm.group(1)[:12], mm.group(4)[4:] + ('+' if re.search(r'to_submit: 0x[1-9a-f]|to_submit: [1-9]', mm.group(5)) else ''))
        if '->' not in mm.group(5): st[mm.group(2)] = (t, key)
        elif mm.group(2) in st:
            t1, k1 = st.pop(mm.group(2)); durs.setdefault(k1, []).append(t - t1)
        continue
    if t0 - 0.001 <= t <= t0 + lim: print(f'{(t-t0)*1000:8.3f} {mm.group(1)[:12]:12s} {mm.group(4).replace("sys_","")} {mm.group(5)[:90]}')
if summ:
    for k, v in sorted(durs.items()):
        v.sort(); print(k, f'n={len(v)} total {sum(v)*1000:.1f} ms max {v[-1]*1000:.2f} ms >1ms: {sum(1 for x in v if x > 0.001)}')

try:
    os.rmdir(T)
except OSError:
    pass
