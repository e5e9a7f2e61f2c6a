#!/usr/bin/env python3
# batchdepth.py r|w MS mode[+ENV=v,ENV2=v] ... (nineteenth session; root; env FILE: a 512 MiB file on
# the disk, written once): fio (mode `fio`, bench/harness.ts fioArgs' peak configuration) or one
# odirect loop (load.js modes op, typed, lanes, queue, batch, registered; load2.js modes arr512,
# arr2x32, typed512, typed2x32, ...) per mode, each with the disk's block requests and the run's
# io_uring_enter / epoll_pwait calls traced in a trace instance of its own (removed at the end).
# Prints per mode: IOPS (completions per second at the device, in the steady middle of the run),
# the device's depth over time (mean, p10, p50, share of time below 16 / 32 / 48), issue groups
# (requests issued within 5 us of each other on one CPU: a dispatch, about one doorbell),
# io_uring_enter calls per 10k ops and SQEs per submitting enter, epoll_pwait per 10k ops.
# The vda filter is 254,0 (edit for another device).
import os, re, subprocess, sys, time, collections
HERE = os.path.dirname(os.path.abspath(__file__))
F = os.environ.get('FILE') or sys.exit('FILE=a 512 MiB file on the disk')
rw, ms = sys.argv[1], int(sys.argv[2])
T = '/sys/kernel/tracing/instances/odirect-%d-batchdepth' % os.getpid()
if not os.path.isdir(T): os.mkdir(T)
def w(p, v):
    with open(os.path.join(T, p), 'w') as f: f.write(v)
EV = ['block/block_rq_issue', 'block/block_rq_complete', 'syscalls/sys_enter_io_uring_enter', 'syscalls/sys_enter_epoll_pwait']
def cmd_of(mode):
    if mode == 'fio':
        name = 'randwrite' if rw == 'w' else 'randread'
        return ['fio', '--name=wtnapi', '--filename=' + F, '--size=512M', '--rw=' + name, '--bs=4096', '--iodepth=64', '--ioengine=io_uring', '--direct=1', '--iodepth_batch_submit=16', '--iodepth_batch_complete_min=8', '--iodepth_batch_complete_max=16', '--norandommap', '--randrepeat=0', '--fallocate=none', '--fixedbufs', '--registerfiles', '--time_based', '--runtime=%dms' % (ms + 300), '--output-format=terse']
    s = 'load2.js' if mode.startswith('arr') or re.match(r'typed\d', mode) else 'load.js'
    return ['node', os.path.join(HERE, s), F, mode, rw, str(ms)]
def q(xs, p):
    # time-weighted quantile of (depth, dt) pairs
    tot = sum(dt for _, dt in xs); acc = 0
    for d, dt in sorted(xs):
        acc += dt
        if acc >= p * tot: return d
    return 0
try:
    w('buffer_size_kb', '98304'); w('trace_clock', 'mono')
    w('events/block/block_rq_issue/filter', 'dev == %d' % ((254 << 20) | 0))
    w('events/block/block_rq_complete/filter', 'dev == %d' % ((254 << 20) | 0))
    for spec in sys.argv[3:]:
        mode, _, envs = spec.partition('+')
        env = dict(os.environ)
        for kv in filter(None, envs.split(',')):
            k, v = kv.split('='); env[k] = v
        w('trace', '')
        for e in EV: w('events/%s/enable' % e, '1')
        p = subprocess.Popen(cmd_of(mode), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out, err = p.communicate()
        for e in EV: w('events/%s/enable' % e, '0')
        text = open(os.path.join(T, 'trace')).read()
        pids = {p.pid}
        # fio runs its job in a child process: take the thread/process ids that entered io_uring most
        blk = []; enters = collections.defaultdict(list); epolls = collections.Counter()
        for line in text.splitlines():
            m = re.match(r'\s*(.+?)-(\d+)\s+\[(\d+)\].*?\s(\d+\.\d+): (\w+(?:\(\w+)?):(.*)', line)
            if not m: continue
            comm, pid, cpu, t, ev, rest = m.group(1), int(m.group(2)), int(m.group(3)), float(m.group(4)), m.group(5), m.group(6)
            if ev in ('block_rq_issue', 'block_rq_complete'):
                b = re.search(r' (\S+) (?:\d+ )?\(.*?\) (\d+) \+ (\d+)', rest)
                if b and int(b.group(3)) > 0 and ('R' in b.group(1) or 'W' in b.group(1)):
                    blk.append((t, ev == 'block_rq_issue', cpu, int(b.group(2))))
            elif ev == 'sys_io_uring_enter(fd':
                s = re.search(r'to_submit: (\w+), min_complete: (\w+)', rest)
                if s: enters[pid].append((t, int(s.group(1), 0), int(s.group(2), 0)))
            elif ev == 'sys_epoll_pwait(epfd':
                epolls[pid] += 1
        if not blk:
            print(spec, 'no block events', err[-500:]); continue
        blk.sort()
        # the steady middle: from 400 ms after the first request to 100 ms before the last
        t0, t1 = blk[0][0] + 0.4, blk[-1][0] - 0.1
        # in flight by sector: a request the driver could not take is requeued and issued again
        live = set(); last = None; xs = []; done = 0; groups = 0; grouped = 0; lastiss = {}
        for t, iss, cpu, sec in blk:
            depth = len(live)
            if last is not None and t0 <= t <= t1: xs.append((depth, t - last))
            last = t
            if iss:
                if sec in live: continue
                live.add(sec)
                if t0 <= t <= t1:
                    grouped += 1
                    if t - lastiss.get(cpu, -1) > 5e-6: groups += 1
                    lastiss[cpu] = t
            elif sec in live:
                live.discard(sec)
                if t0 <= t <= t1: done += 1
        span = t1 - t0
        tot = sum(dt for _, dt in xs) or 1
        mean = sum(d * dt for d, dt in xs) / tot
        below = lambda k: 100 * sum(dt for d, dt in xs if d < k) / tot
        # the process that entered io_uring most (fio's job process, node's JS thread)
        me = max(enters, key=lambda k: len(enters[k])) if enters else None
        en = [e for e in enters.get(me, []) if t0 <= e[0] <= t1]
        subs = [s for _, s, _ in en if s > 0]
        waits = sum(1 for _, _, mc in en if mc > 0)
        ep = sum(1 for _ in ())
        eps = epolls.get(me, 0) * (span / max(1e-9, blk[-1][0] - blk[0][0]))
        per = lambda v: v * 1e4 / max(1, done)
        print('%-26s iops %7.0f  depth mean %5.1f p10 %2d p50 %2d  idle %4.1f%% <16 %4.1f%% <32 %4.1f%% <48 %4.1f%%  req/issue-group %4.2f  enter/10k %5.0f  sqe/submit %5.2f  waits/10k %4.0f  epoll/10k %4.0f' % (
            spec, done / span, mean, q(xs, .1), q(xs, .5), below(1), below(16), below(32), below(48), grouped / max(1, groups), per(len(en)), sum(subs) / max(1, len(subs)), per(waits), per(eps)), flush=True)
finally:
    for e in EV:
        try: w('events/%s/enable' % e, '0')
        except OSError: pass
    try:
        w('trace', ''); os.rmdir(T)
    except OSError: pass
