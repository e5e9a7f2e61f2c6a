#!/bin/bash
# usage: measure.sh NAME fio|op|typed|lanes|queue|batch r|w [DUR_MS] ; env passed through (ODIRECT_*)
# counts (perf stat -a) + histograms (perf record) + interrupts (IRQ=name in /proc/interrupts) + device depth (/sys/block/vda/inflight)
set -u
NAME=$1; MODE=$2; RW=$3; DUR=${4:-3000}
F=${FILE:?FILE=a 512 MiB file on the disk, written once (fio --rw=write --bs=1M --direct=1)}
D=${OUT:-/tmp/odirect-counts}/$NAME; mkdir -p $D
H=$(cd "$(dirname "$0")" && pwd)
if [ "$MODE" = fio ]; then
  rwname=$([ $RW = w ] && echo randwrite || echo randread)
  CMD=(${PIN:+taskset -c $PIN} fio --name=wtcore --filename=$F --size=512M --rw=$rwname --bs=4096 --iodepth=${QD:-64} --ioengine=io_uring --direct=1 --iodepth_batch_submit=16 --iodepth_batch_complete_min=8 --iodepth_batch_complete_max=16 --norandommap --randrepeat=0 --fallocate=none --invalidate=1 --numjobs=1 --output-format=json --fixedbufs --registerfiles --hipri=0 --sqthread_poll=0 --time_based --runtime=${DUR}ms)
else
  S=$H/load.js; case $MODE in arr*|typed[0-9]*|typed2x32) S=$H/load2.js;; esac
  CMD=(${PIN:+taskset -c $PIN} node $S $F $MODE $RW $DUR)
fi
irq() { awk -v n="${IRQ:-virtio1-req.0}" '$NF==n{s=0; for(i=2;i<NF;i++) if($i ~ /^[0-9]+$/) s+=$i; print s}' /proc/interrupts; }
EV=syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req,io_uring:io_uring_queue_async_work,io_uring:io_uring_local_work_run,io_uring:io_uring_task_add,block:block_unplug,block:block_rq_issue,block:block_rq_complete,sched:sched_switch,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_read,syscalls:sys_enter_write,iomap:iomap_dio_complete,workqueue:workqueue_execute_start
# pass 1: counts
i0=$(irq)
python3 $H/inflight.py > $D/inflight.txt & IP=$!
perf stat -a -x, -o $D/stat-a.txt -e $EV,irq:irq_handler_entry -- perf stat -x, -o $D/stat-p.txt -e task-clock,context-switches,cpu-migrations,$EV -- "${CMD[@]}" > $D/out.json 2>$D/err.txt
i1=$(irq)
kill $IP; wait $IP 2>/dev/null
echo 0 > $D/kicks.txt
echo $((i1-i0)) > $D/irqs.txt
# pass 2: histograms (SQEs per enter, CQEs per local work run, requests per unplug)
if [ "${HIST:-1}" = 1 ]; then
perf record -q -a -o $D/rec.data -e syscalls:sys_enter_io_uring_enter -e io_uring:io_uring_local_work_run -e block:block_unplug -e block:block_rq_issue -e workqueue:workqueue_execute_start -- "${CMD[@]}" > $D/out2.json 2>>$D/err.txt
perf script -i $D/rec.data -F comm,tid,cpu,time,event,trace > $D/rec.txt 2>/dev/null
rm -f $D/rec.data
fi
python3 $H/analyze.py $D $MODE
