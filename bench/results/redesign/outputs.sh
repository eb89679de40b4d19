#!/usr/bin/env bash
# vdsr-run bench/samples outputs for every CPU backend/precision and model; argument: bin dir, output root
set -u
BIN=$1; ROOT=$2; SRC=/work/main/bench/samples
mkdir -p $ROOT
for model in vdsr vdsr_real srcnn srcnn_x3; do
  case $model in srcnn) scales="2";; srcnn_x3) scales="3";; *) scales="2 3 2.5";; esac
  for s in $scales; do
    for bp in onnxruntime-cpu:fp32 onnxruntime-cpu:int8 onnxruntime-cpu:fp16 torch-cpu:fp32 onnxruntime-cpu:auto auto:auto; do
      b=${bp%%:*}; p=${bp##*:}
      out=$ROOT/$model-x$s-$b-$p
      $BIN/vdsr-run $SRC --scale $s --model $model --backend $b --precision $p -o $out > $out.log 2>&1
      echo "$model x$s $b $p rc=$?" >> $ROOT/rc.txt
    done
  done
done
# tiles and the list API
$BIN/vdsr-run $SRC --scale 2 --tile 64 -o $ROOT/vdsr-x2-tile64 > $ROOT/tile64.log 2>&1; echo "tile64 rc=$?" >> $ROOT/rc.txt
