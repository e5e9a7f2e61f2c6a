import sys, json, re, os, collections
# one line per run dir: name iops irq/10k enter/10k sqe/enter cqe/lwr req/unplug ctxsw/10k cpu/op inflight
for D in sys.argv[1:]:
    name = os.path.basename(D)
    try:
        t = open(D + '/out.json').read()
        if t.lstrip().startswith('{') and '"jobs"' in t:
            j = json.loads(t[t.index('{'):]); job = j['jobs'][0]
            n = job['read']['total_ios'] + job['write']['total_ios']; iops = job['read']['iops'] + job['write']['iops']
        else:
            j = json.loads(t.strip().splitlines()[-1]); n = j['total']; iops = j['iops']
    except Exception as e:
        print(name, 'ERR', e); continue
    def stat(p):
        r = {}
        for line in open(p):
            f = line.strip().split(',')
            if len(f) > 3 and f[0] and f[0][0].isdigit(): r[f[2]] = float(f[0])
        return r
    a = stat(D + '/stat-a.txt'); p = stat(D + '/stat-p.txt')
    per = lambda v: v * 10000.0 / n
    irqs = int(open(D + '/irqs.txt').read())
    infl = re.search(r'mean\(active\) ([\d.]+).*below16 (\d+)', open(D + '/inflight.txt').read())
    print('%-14s iops %7.0f  irq %5.0f  enter %5.0f  submit/enter %5.2f  epoll %4.0f  ctxsw %4.0f  wq %5.0f  cpu/op %5.2f  depth %s <16 %s%%' % (
        name, iops, per(irqs), per(p.get('syscalls:sys_enter_io_uring_enter', 0)),
        p.get('io_uring:io_uring_submit_req', 0) / max(1, p.get('syscalls:sys_enter_io_uring_enter', 1)),
        per(p.get('syscalls:sys_enter_epoll_pwait', 0)), per(p.get('context-switches', 0)), per(a.get('workqueue:workqueue_execute_start', 0)),
        p.get('task-clock', 0) * 1000.0 / n, infl.group(1) if infl else '?', infl.group(2) if infl else '?'))
