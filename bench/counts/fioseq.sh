#!/bin/bash
# fioseq.sh r|w MS [huge] (eighteenth session; root; env FILE: a file on the disk): fio's 1 MiB
# sequential job at depth 4 as bench/harness.ts fioArgs builds it for the seqread-1m-qd4 /
# seqwrite-1m-qd4 rows, printing `T0 <s> T1 <s>` (CLOCK_MONOTONIC) around it for blkstream.py.
# `huge`: its buffers on 2 MiB huge pages (--mem=mmaphuge on a private hugetlbfs, 4 pages
# reserved for the run and given back after), as the bench's "fio io_uring, huge pages" row.
set -e
F=${FILE:?FILE=a file on the disk}
RW=$([ "$1" = w ] && echo write || echo read)
MS=${2:-2000}
EXTRA=()
if [ "$3" = huge ]; then
  D=$(mktemp -d /tmp/wt-ts-huge-XXXXXX)
  BEFORE=$(cat /proc/sys/vm/nr_hugepages)
  echo $((BEFORE + 4)) > /proc/sys/vm/nr_hugepages
  mount -t hugetlbfs -o pagesize=2M none "$D"
  trap 'umount "$D"; rmdir "$D"; echo '"$BEFORE"' > /proc/sys/vm/nr_hugepages' EXIT
  EXTRA=(--mem=mmaphuge:$D/fio --hugepage-size=2097152)
fi
mono() { python3 -c 'import time; print(time.clock_gettime(time.CLOCK_MONOTONIC))'; }
T0=$(mono)
fio --name=wt-ts --filename=$F --size=$(stat -c %s $F) --rw=$RW --bs=1M --iodepth=4 --ioengine=io_uring \
  --direct=1 --iodepth_batch_submit=4 --iodepth_batch_complete_min=2 --iodepth_batch_complete_max=4 \
  --fallocate=none --invalidate=1 --fixedbufs --registerfiles --time_based --runtime=${MS}ms \
  --output-format=json "${EXTRA[@]}" |
  python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; s=j['$RW']; print('fio $RW MB/s %d p50 %.0f us' % (s['bw_bytes']/1e6, s['clat_ns']['percentile']['50.000000']/1e3))"
T1=$(mono)
echo "T0 $T0 T1 $T1"
