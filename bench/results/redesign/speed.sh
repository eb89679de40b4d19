#!/usr/bin/env bash
# before/after runtime speed, back to back, with the background training paused (SIGSTOP) and resumed on exit
P=$(pgrep -f "trainenv/bin/vdsr-train" | head -1)
[ -n "$P" ] && kill -STOP "$P"
trap '[ -n "$P" ] && kill -CONT "$P"' EXIT
cd /tmp
for round in 1 2; do
  /work/trainenv/bin/python -m vdsr.bench.runtime_speed speed --json /work/baseline/speed/before$round.json --size 640x480 --repeats 2 --folder-images 1 > /work/baseline/speed/before$round.txt 2>&1
  python -m vdsr.bench.scripts.runtime_speed speed --json /work/baseline/speed/after$round.json --size 640x480 --repeats 2 --folder-images 1 > /work/baseline/speed/after$round.txt 2>&1
done
