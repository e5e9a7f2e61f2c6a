#!/bin/bash
# usage: depth.sh r|w MS mode... : device depth (inflight.py) and IOPS per mode, fio first
F=${FILE:?FILE=a 512 MiB file on the disk}
RW=$1; MS=$2; shift 2
H=$(cd "$(dirname "$0")" && pwd)
for m in fio "$@"; do
  python3 $H/inflight.py > /tmp/odirect-depth-$m.txt & IP=$!
  if [ $m = fio ]; then
    name=$([ $RW = w ] && echo randwrite || echo randread)
    out=$(fio --name=wtcore --filename=$F --size=512M --rw=$name --bs=4096 --iodepth=64 --ioengine=io_uring --direct=1 --iodepth_batch_submit=16 --iodepth_batch_complete_min=8 --iodepth_batch_complete_max=16 --norandommap --randrepeat=0 --fallocate=none --output-format=json --fixedbufs --registerfiles --time_based --runtime=${MS}ms | python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print('\"iops\":%d' % (j['read']['iops']+j['write']['iops']))")
  else
    mm=${m%%+*}; envs=${m#*+}; [ "$envs" = "$m" ] && envs=
    S=$H/load.js; case $mm in arr*|typed[0-9]*|queue) S=$H/load2.js;; esac
    out=$(env $(echo $envs | tr ',' ' ') node $S $F $mm $RW $MS | grep -o '"iops":[0-9]*')
  fi
  kill $IP; wait $IP 2>/dev/null
  echo "$m $out $(cat /tmp/odirect-depth-$m.txt)"
done
