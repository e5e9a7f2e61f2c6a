import subprocess, json, sys, statistics, os, time
# usage: abround.py RW ROUNDS DUR_MS mode1 mode2 ... (fio is always first in each round); env X_<mode>=... not supported
rw, rounds, dur = sys.argv[1], int(sys.argv[2]), sys.argv[3]
modes = sys.argv[4:]
F = os.environ['FILE']
def fio():
    name = 'randwrite' if rw == 'w' else 'randread'
    out = subprocess.run(['fio', '--name=wtcore', '--filename=' + F, '--size=512M', '--rw=' + name, '--bs=4096', '--iodepth=64', '--ioengine=io_uring', '--direct=1', '--iodepth_batch_submit=16', '--iodepth_batch_complete_min=8', '--iodepth_batch_complete_max=16', '--norandommap', '--randrepeat=0', '--fallocate=none', '--invalidate=1', '--output-format=json', '--fixedbufs', '--registerfiles', '--hipri=0', '--sqthread_poll=0', '--time_based', '--runtime=%sms' % dur, '--ramp_time=300ms'], capture_output=True, text=True).stdout
    j = json.loads(out[out.index('{'):]); job = j['jobs'][0]
    return job['read']['iops'] + job['write']['iops']
def node(mode):
    env = dict(os.environ)
    m, _, envs = mode.partition('+')
    for kv in filter(None, envs.split(',')):
        k, v = kv.split('='); env[k] = v
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'load2.js') if m in ('arr512', 'arr2x32', 'typed512', 'typed4096', 'typed2x32', 'queue') else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'load.js')
    pre = ['taskset', '-c', env['PIN']] if 'PIN' in env else []
    out = subprocess.run(pre + ['node', script, F, m, rw, dur], capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])['iops']
ratios = {m: [] for m in modes}
for r in range(rounds):
    f = fio(); line = 'fio %6.0f' % f
    for m in modes:
        v = node(m); ratios[m].append(v / f); line += '  %s %6.0f (%.2f)' % (m, v, v / f)
    print(line, flush=True)
print('load', open('/proc/loadavg').read().split()[:3])
for m in modes:
    x = sorted(ratios[m]); print('%-28s median %.3f  min %.3f max %.3f' % (m, statistics.median(x), x[0], x[-1]))
