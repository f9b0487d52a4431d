#!/usr/bin/env bash
# Every GPU check in one run (each part stopped at its time limit: at most 9.5 minutes), for a machine
# with CUDA and the library's requirements (python3 with torch, torchvision, transformers, scikit-learn;
# pymoo for osf search):
#   1. bench/cuda_checks.py: equivalence, gradients, torch.compile, amp training, a detector, latency;
#   2. the osf command on CUDA: train --amp, resume on the CPU, search, export, --nproc beyond the GPUs;
#   3. bench/supernet_step.py --device cuda (supernet step against the standalone subnet's step).
# Logs and results go to $OUT (default /tmp/osf-cuda); the exit status is 1 when any part failed.
#   bash bench/cuda_checks.sh
# A machine without pymoo (the device image of this workplace): download its wheels here (Python 3.12,
# manylinux, --no-deps: pymoo moocore cffi pycparser platformdirs about-time alive-progress autograd cma
# Deprecated graphemeu, the versions of requirements/dev.txt) into .whl/, then there:
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site bash bench/cuda_checks.sh
set -u
OUT=${OUT:-/tmp/osf-cuda}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
failed=0
part() {  # part NAME SECONDS COMMAND...: run it with a time limit, log it, remember a failure
    local name=$1 limit=$2; shift 2
    echo "== $name" | tee -a "$OUT/summary.log"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "== $name: exit $rc" | tee -a "$OUT/summary.log"
    [ "$rc" -eq 0 ] || failed=1
}
osf() { python3 -m osf.cli.main "$@"; }
expect_refusal() {  # the command must exit 2 and print MESSAGE
    local message=$1; shift
    osf "$@" --quiet 2>&1 | tee /dev/stderr | grep -qF "$message"
}
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/summary.log"

part checks 240 python3 bench/cuda_checks.py --json "$OUT/cuda_checks.json"
run=$(mktemp -d)/run
part cli 150 bash -c "set -e; $(declare -f osf expect_refusal)
  osf train builtin:resnet --data digits --out $run --device cuda --amp --lr-schedule constant --epochs 2 --quiet
  osf train builtin:resnet --data digits --out $run --device cpu --amp --lr-schedule constant --epochs 3 --quiet  # resumed on the CPU
  osf search $run --device cuda --budget 40 --quiet
  osf export $run --pick flops=50% --out $run-export --quiet
  python3 -c \"import torch; m = torch.export.load('$run-export/model.pt2').module(); print(m(torch.rand(3, 1, 8, 8)).shape)\"
  n=\$(python3 -c 'import torch; print(torch.cuda.device_count())')
  expect_refusal \"needs one GPU per rank and this machine has \$n\" train builtin:resnet --data digits \
    --out $run-ranks --device cuda --nproc \$((n + 1)) --epochs 1"
part supernet_step 180 python3 bench/supernet_step.py --device cuda --json "$OUT/supernet_step-cuda.json"
cp docs/benchmarks.md "$OUT/benchmarks.md"
exit $failed
