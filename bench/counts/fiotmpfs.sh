#!/bin/sh
# fiotmpfs.sh SECS [fio args]: fio's bench job (bench/harness.ts fioArgs, io_uring peak config) on FILE
# (default /dev/shm/odirect-counts.dat, 256 MiB), random writes unless --rw=randread is given; one line of IOPS and CPU.
F=${FILE:-/dev/shm/odirect-counts.dat}; S=${1:-1}; shift
fio --name=x --filename=$F --size=256M --rw=randwrite --bs=4096 --iodepth=64 --ioengine=io_uring --direct=1 --iodepth_batch_submit=16 --iodepth_batch_complete_min=8 --iodepth_batch_complete_max=16 --norandommap --randrepeat=0 --fallocate=none --fixedbufs --registerfiles --hipri=0 --sqthread_poll=0 --time_based --runtime=${S} --output-format=json "$@" | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("fio %.1fk IOPS usr %.1f sys %.1f" % ((j["write"]["iops"]+j["read"]["iops"])/1000, j["usr_cpu"], j["sys_cpu"]))'
