#!/bin/bash
# memshape.sh ROUNDS MS SPEC... (twenty-first session; root; env FILE: a file on the disk, MEMREAD:
# memread.c built, default /tmp/memread): interleaved rounds of sequential direct reads, one line
# per round with each SPEC's MB/s and its ratio to the round's first SPEC (paired: the disk swings
# 2-4x within minutes). SPEC:
#   fio:BS:QD             fio's io_uring job (as fioshape.sh) on 2 MiB huge pages (QD x BS of them)
#   fiomalloc:BS:QD       the same on fio's default memory (malloc: 4 KiB pages)
#   m:BS:QD:NBUF:MEM[:T]  memread.c (Linux AIO) into NBUF buffers in turn, MEM thp|small|hugetlb|fresh,
#                         T=1: the CPU writes each buffer's pages before its read
# The order of the SPECs rotates from round to round. Huge pages for hugetlb/fio are reserved for
# the run and given back after.
F=${FILE:?FILE=a file on the disk}
M=${MEMREAD:-/tmp/memread}
D=$(mktemp -d /tmp/odirect-memshape-XXXXXX)
BEFORE=$(cat /proc/sys/vm/nr_hugepages)
echo $((BEFORE + 48)) > /proc/sys/vm/nr_hugepages
mount -t hugetlbfs -o pagesize=2M none "$D"
trap 'umount "$D"; rmdir "$D"; echo '"$BEFORE"' > /proc/sys/vm/nr_hugepages' EXIT
R=$1; MS=$2; shift 2
SPECS=("$@"); N=${#SPECS[@]}
one() {
  local s=$1 kind bs qd rest
  IFS=: read -r kind bs qd rest <<<"$s"
  case $kind in
    fio|fiomalloc)
      local mem=()
      [ "$kind" = fio ] && mem=(--mem=mmaphuge:$D/fio --hugepage-size=2097152)
      fio --name=x --filename=$F --size=$(stat -c %s $F) --rw=read --bs=$bs --iodepth=$qd --ioengine=io_uring \
        --direct=1 --iodepth_batch_submit=$qd --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=$qd \
        --fallocate=none --invalidate=1 --time_based --runtime=${MS}ms \
        --output-format=json "${mem[@]}" | python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print(int(j['read']['bw_bytes']/1e6))" ;;
    m)
      local nbuf mem t
      IFS=: read -r nbuf mem t <<<"$rest"
      "$M" "$F" "$bs" "$qd" "$nbuf" "$mem" "$(python3 -c "print($MS/1000)")" "${t:-0}" | cut -d' ' -f1 ;;
  esac
}
for r in $(seq "$R"); do
  declare -A v=()
  for i in $(seq 0 $((N - 1))); do
    j=$(( (i + r) % N ))
    v[$j]=$(one "${SPECS[$j]}")
  done
  line="r$r load $(cut -d' ' -f1 /proc/loadavg):"
  for j in $(seq 0 $((N - 1))); do
    line="$line ${SPECS[$j]}=${v[$j]}($(python3 -c "print('%.2f' % (${v[$j]:-0}/max(1,${v[0]:-1})))"))"
  done
  echo "$line"
  unset v
done
