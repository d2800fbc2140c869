#!/usr/bin/env bash
# The GPU runs behind the README's GPU figures, for one borrowed GPU and a
# short lease: every model's CUDA path (the smoke suite and the unit tests
# that train models), and budgeted Amazon Beauty runs of the generative
# models, SASRec-CE and DiffuRec, side by side on the one GPU. Trials run
# with --no-ray, so the machine needs torch, numpy, pandas, pyyaml, tabulate
# and matplotlib/seaborn, not Ray.
#
#   DRBENCH_DATA=<data root> OUT=<folder> bash bench/perf/gpu_runs.sh [minutes per run, default 4] [set, default all]
#
# Sets: `all` is the above; `bidirectional` reruns BERT4Rec and DiffSASRec on
# Amazon Beauty (beauty-cpu settings) and MovieLens-1M (ml1m-cpu settings)
# and their unit tests, after their encoder stopped scaling item embeddings.
#
# Writes <OUT>/summary.txt (versions, exit codes, each log's last lines) and
# <OUT>/runs.tgz (the run folders and full logs); rebuild a run's report here
# with `python run_bench.py --report <run folder>`.
set -u
out=${OUT:-results/gpu}
budget=${1:-4}
set=${2:-all}
mkdir -p "$out/logs"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
python=${PYTHON:-python3}
limit=$(( ${budget%.*} * 60 + 200 ))  # training budget, plus the last epoch, the test and the step sweeps

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $python -c "import torch, numpy, pandas; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| numpy', numpy.__version__, '| pandas', pandas.__version__)"
} > "$out/summary.txt" 2>&1

launch() {  # launch NAME ARGS...: one suite in its own process, its log under logs/
  local name=$1; shift
  ( timeout "$limit" $python run_bench.py --no-ray --results-dir "$out/runs" "$@" > "$out/logs/$name.log" 2>&1
    echo "$name: exit $?" >> "$out/logs/exit.txt" ) &
}

tests=tests
if [ "$set" = bidirectional ]; then
  launch beauty-bert4rec --suite beauty-cpu --models bert4rec --train-budget "$budget"
  launch beauty-diffsasrec --suite beauty-cpu --models diffsasrec --train-budget "$budget"
  launch ml1m-bert4rec --suite ml1m-cpu --models bert4rec --train-budget "$budget"
  launch ml1m-diffsasrec --suite ml1m-cpu --models diffsasrec --train-budget "$budget"
  tests="tests/baselines/test_bert4rec.py tests/diffusion/test_diffsasrec.py tests/run/test_trial.py"
else
  launch smoke --suite smoke
  launch tiger --suite generative --datasets amazon-beauty --models tiger-collab --seeds 0 --train-budget "$budget"
  launch sid-diffusion --suite generative --datasets amazon-beauty --models sid-diffusion-collab --seeds 0 --train-budget "$budget"
  launch sasrec-ce --suite generative --datasets amazon-beauty --models sasrec-ce --seeds 0 --train-budget "$budget"
  launch diffurec --suite paper --datasets amazon-beauty --models diffurec --seeds 0 --train-budget "$budget"
fi
# The unit tests that train models pick the GPU themselves; Ray's own tests are left to CI.
( env -u DRBENCH_DATA timeout "$limit" $python -m pytest -q -p no:cacheprovider $tests \
    --ignore=tests/run/test_ray_backend.py --ignore=tests/run/test_sweep.py --ignore=tests/test_run_bench.py \
    > "$out/logs/pytest.log" 2>&1; echo "pytest: exit $?" >> "$out/logs/exit.txt" ) &
wait

{
  echo; cat "$out/logs/exit.txt"
  for log in "$out"/logs/*.log; do echo; echo "== $(basename "$log")"; tail -n 25 "$log"; done
} >> "$out/summary.txt"
tar czf "$out/runs.tgz" -C "$out" runs logs
cat "$out/summary.txt"
