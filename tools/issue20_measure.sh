#!/bin/bash
# heavy measurements of issue 20 (run under flock /tmp/edgelm-heavy.lock)
cd /work/wt-i20 && . /work/main/.venv/bin/activate && export PYTHONPATH=/work/wt-i20
echo "== start $(date -u +%H:%M:%S) uptime: $(uptime)"
python tools/kv_buffer_ab.py /tmp/i20-smol/int4/model.onnx 6 > /tmp/i20/ab_kv.json 2>/tmp/i20/ab_kv.err; cat /tmp/i20/ab_kv.json
echo "== compare $(date -u +%H:%M:%S) uptime: $(uptime)"
python tools/llamacpp_compare.py --onnx /tmp/i20-smol/int4 --threads 2 --lookup --rounds 3 --seconds 5 --native-reps 2 --json /tmp/i20/compare.json > /tmp/i20/compare.out 2>/tmp/i20/compare.err
tail -20 /tmp/i20/compare.err
echo "== profile $(date -u +%H:%M:%S) uptime: $(uptime)"
python tools/profile_ops.py /tmp/i20-smol/int4/model.onnx --decode 32+128 --threads 2 > /tmp/i20/profile.txt 2>/tmp/i20/profile.err; cat /tmp/i20/profile.txt
echo "== bench $(date -u +%H:%M:%S) uptime: $(uptime)"
edgelm bench /tmp/i20-smol/int4 --runtime ort-cpu --threads 2 --new-tokens 128 --speculative lookup --no-compare --seconds 3 --json /tmp/i20/bench.json > /tmp/i20/bench.md 2>/tmp/i20/bench.err; cat /tmp/i20/bench.md
echo "== done $(date -u +%H:%M:%S) uptime: $(uptime)"
