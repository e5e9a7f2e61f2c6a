import json, statistics, sys
d=json.load(open(sys.argv[1]))
by={}
for x in d['results']:
    by[(x['workload'],x['engine'].split(':')[-1].strip("'"))]=[ru['ops']/ru['seconds'] for ru in x['runs']]
for wl in sorted(set(k[0] for k in by)):
    fio=by[(wl,'fio-io_uring')]
    for b in sorted(set(k[1] for k in by if k[0]==wl)):
        if b.endswith('0') and (wl,b[:-1]) in by:
            A=by[(wl,b)]; B=by[(wl,b[:-1])]
            pr=[bb/aa for aa,bb in zip(A,B)]
            print('%s %s: new/old per round %s median %.3f better %d/%d; vs fio %.3f -> %.3f' % (wl,b[:-1],[round(p,2) for p in pr],statistics.median(pr),sum(p>1 for p in pr),len(pr),statistics.median([a/f for a,f in zip(A,fio)]),statistics.median([v/f for v,f in zip(B,fio)])))
