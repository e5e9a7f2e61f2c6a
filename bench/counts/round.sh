#!/bin/bash
# usage: round.sh TAG RW "name:mode:ENV=.. ENV2=.." ...   (one round, each config once, in order)
TAG=$1; RW=$2; shift 2
for spec in "$@"; do
  name=${spec%%:*}; rest=${spec#*:}; mode=${rest%%:*}; envs=${rest#*:}; [ "$envs" = "$rest" ] && envs=
  env $envs HIST=${HIST:-0} $(dirname "$0")/measure.sh $TAG-$name $mode $RW ${DUR:-2000} > /dev/null 2>&1
  python3 $(dirname "$0")/summary.py ${OUT:-/tmp/odirect-counts}/$TAG-$name
done
