#!/bin/bash
# fioshape.sh ROUNDS MS bs:depth... (twentieth session; root; env FILE): fio's sequential read job (as fioseq.sh) on 2 MiB huge-page buffers for each shape in turn, one line of MB/s per round.
F=${FILE:?FILE=a file on the disk}
D=$(mktemp -d /tmp/odirect-fioshape-XXXXXX)
BEFORE=$(cat /proc/sys/vm/nr_hugepages)
echo $((BEFORE + 16)) > /proc/sys/vm/nr_hugepages
mount -t hugetlbfs -o pagesize=2M none "$D"
trap 'umount "$D"; rmdir "$D"; echo '"$BEFORE"' > /proc/sys/vm/nr_hugepages' EXIT
R=$1; MS=$2; shift 2
for r in $(seq $R); do
  line="r$r load $(cut -d' ' -f1 /proc/loadavg):"
  for s in "$@"; do
    bs=${s%%:*}; qd=${s##*:}
    v=$(fio --name=x --filename=$F --size=$(stat -c %s $F) --rw=read --bs=$bs --iodepth=$qd --ioengine=io_uring \
      --direct=1 --iodepth_batch_submit=$qd --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=$qd \
      --fallocate=none --invalidate=1 --fixedbufs --registerfiles --time_based --runtime=${MS}ms \
      --output-format=json --mem=mmaphuge:$D/fio --hugepage-size=2097152 | python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print(int(j['read']['bw_bytes']/1e6))")
    line="$line $s=$v"
  done
  echo "$line"
done
