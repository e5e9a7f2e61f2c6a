import sys, time
# samples /sys/block/vda/inflight every 2 ms until killed; prints mean depth and histogram
import signal
s=[]
stop=False
def h(*a):
    global stop; stop=True
signal.signal(signal.SIGTERM,h)
f=open('/sys/block/vda/inflight')
while not stop:
    f.seek(0); r,w=f.read().split(); s.append(int(r)+int(w)); time.sleep(0.002)
s=[x for x in s]
act=[x for x in s if x>0]
import statistics
def q(a,p): a=sorted(a); return a[int(p*(len(a)-1))] if a else 0
print("inflight samples %d active %d mean(active) %.1f p10 %d p50 %d p90 %d below16 %.0f%%" % (len(s), len(act), statistics.mean(act) if act else 0, q(act,.1), q(act,.5), q(act,.9), 100*sum(1 for x in act if x<16)/max(1,len(act))))
