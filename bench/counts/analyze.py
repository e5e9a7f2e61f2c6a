import sys, json, re, collections, os
D, mode = sys.argv[1], sys.argv[2]
def ops_of(path):
    t = open(path).read()
    if mode == 'fio':
        j = json.loads(t[t.index('{'):])
        job = j['jobs'][0]
        n = job['read']['total_ios'] + job['write']['total_ios']
        iops = job['read']['iops'] + job['write']['iops']
        cpu = (job['usr_cpu'] + job['sys_cpu'])
        return n, iops, 'cpu%% %.0f' % cpu
    j = json.loads(t.strip().splitlines()[-1])
    return j['total'], j['iops'], 'cpu/op %.2f p50native %s' % (j['cpuUsPerOp'], j.get('nativeP50'))
n, iops, extra = ops_of(D + '/out.json')
def stat(p):
    r = {}
    for line in open(p):
        f = line.strip().split(',')
        if len(f) > 3 and f[0] and f[0][0].isdigit():
            r[f[2]] = float(f[0])
    return r
a = stat(D + '/stat-a.txt'); p = stat(D + '/stat-p.txt')
per = lambda v: v * 10000.0 / n
irqs = int(open(D + '/irqs.txt').read()); kicks = int(open(D + '/kicks.txt').read().strip() or 0)
print('== %s  ops %d  iops %.0f  %s' % (os.path.basename(D), n, iops, extra))
print('  per 10k ops: irqs %.0f' % per(irqs))
keys = ['syscalls:sys_enter_io_uring_enter','io_uring:io_uring_submit_req','io_uring:io_uring_queue_async_work','io_uring:io_uring_local_work_run','io_uring:io_uring_task_add','block:block_unplug','block:block_rq_issue','block:block_rq_complete','sched:sched_switch','syscalls:sys_enter_epoll_pwait','syscalls:sys_enter_epoll_wait','syscalls:sys_enter_read','syscalls:sys_enter_write','iomap:iomap_dio_complete','workqueue:workqueue_execute_start','irq:irq_handler_entry','task-clock','context-switches','cpu-migrations']
for k in keys:
    s = k.split(':')[-1]
    va = a.get(k); vp = p.get(k)
    print('  %-28s sys %8s   proc %8s' % (s, '%.0f' % per(va) if va is not None else '-', '%.0f' % per(vp) if vp is not None else '-'))
if 'task-clock' in p: print('  task-clock us/op %.2f' % (p['task-clock'] * 1000.0 / n))
print('  ' + open(D + '/inflight.txt').read().strip())
if os.path.exists(D + '/rec.txt'):
    sub = collections.Counter(); mc = collections.Counter(); lw = collections.Counter(); un = collections.Counter(); groups = [0, 0]; cpus = collections.Counter(); lastt = {}; iss = collections.Counter(); wq = collections.Counter()
    for line in open(D + '/rec.txt'):
        m = re.search(r'sys_enter_io_uring_enter.*to_submit: (0x[0-9a-f]+), min_complete: (0x[0-9a-f]+), flags: (0x[0-9a-f]+)', line)
        if m:
            comm = line.split()[0]
            if comm.startswith('node') or comm.startswith('fio') or comm.startswith('wtcore'):
                sub[int(m.group(1), 16)] += 1; mc[(int(m.group(2), 16), int(m.group(3), 16))] += 1
            continue
        mine = line.split()[0] in ('node', 'fio', 'wtcore')
        m = re.search(r'io_uring_local_work_run.*count (\d+)', line)
        if m:
            if mine: lw[int(m.group(1))] += 1
            continue
        m = re.search(r'block_unplug: \[(\S+)\] (\d+)', line)
        if m:
            if mine: un[int(m.group(2))] += 1
            continue
        if 'block_rq_issue' in line and ' 254,0 ' in line:
            mt = re.search(r'\[(\d+)\]\s+([\d.]+):', line)
            if mt:
                cpu, t = int(mt.group(1)), float(mt.group(2))
                if t - lastt.get(cpu, -1) > 5e-6: groups[0] += 1; cpus[(line.split()[0], cpu)] += 1
                lastt[cpu] = t
                groups[1] += 1
            comm = re.sub(r'[/:-]?\d+$', '', line.split()[0]); m2 = re.search(r' (\w+) \d+ \(', line); iss[(comm, m2.group(1) if m2 else '?')] += 1; continue
        m = re.search(r'workqueue_execute_start.*function (\S+)', line)
        if m: wq[m.group(1)] += 1
    def hist(c, name):
        tot = sum(c.values());
        if not tot: print('  %s: none' % name); return
        mean = sum(k * v for k, v in c.items()) / tot
        top = ', '.join('%d:%d' % (k, v) for k, v in sorted(c.items())[:24])
        print('  %s: n=%d mean %.2f  [%s]' % (name, tot, mean, top))
    hist(sub, 'to_submit per enter')
    print('  (min_complete,flags) per enter: ' + ', '.join('%s:%d' % (k, v) for k, v in mc.most_common(8)))
    hist(lw, 'CQEs per local_work_run')
    hist(un, 'requests per unplug')
    print('  issue groups (gap > 5us, per cpu, ~dispatches/kicks): %d for %d requests: %.2f req/group' % (groups[0], groups[1], groups[1] / max(1, groups[0])))
    print('  issue groups by (comm, cpu): ' + ', '.join('%s:%d' % (k, v) for k, v in cpus.most_common(4)))
    print('  rq_issue by (comm, rwbs): ' + ', '.join('%s:%d' % (k, v) for k, v in iss.most_common(8)))
    print('  workqueue fns: ' + ', '.join('%s:%d' % (k, v) for k, v in wq.most_common(8)))
