#!/usr/bin/env bash
# The CUDA path on a real GPU in one prepared run: install, the `gpu` tests, the three GPU
# benchmarks, a CUDA run killed mid-way and resumed, and a study pruned by the forecast.
#
#   bash benchmarks/gpu_check.sh [STEP...]            # on a GPU machine; outputs under $OUT (default ./gpu-check-out)
#   bash benchmarks/gpu_check.sh --dry-run [STEP...]  # anywhere: print the steps, check each file, command and option
#   bash benchmarks/gpu_check.sh --fetch-wheels [HAVE]  # where PyPI answers: wheels for a GPU machine without it
#
# Steps: install pytest throughput overhead scaling resume tune (all by default; install always
# runs first, since every run starts a fresh environment).
#
# Install: a virtual environment over $PYTHON (default python3). When that interpreter has a CUDA
# build of torch (a GPU image's), the environment sees its packages and the project is installed
# over them; otherwise torch comes from the index with the project (PyPI's Linux wheels are CUDA
# builds). Offline, whatever is missing comes from the wheels in $GPU_CHECK_WHEELS (default .whl/),
# which --fetch-wheels downloads: the project's and its test extra's dependencies for the target
# interpreter (GPU_CHECK_PYTHON_VERSION, default 3.12, manylinux x86_64), less torch and the CUDA
# libraries, and less every package named in the file HAVE (one a line, or comma-separated).
#
# Each step runs under its own timeout, and all within GPU_CHECK_SECONDS (default 510): a step that
# fails or times out does not stop the next. $OUT/summary.txt holds each step's exit code (124: its
# timeout) and seconds; the logs lie beside it, seven files in all (summary.txt, install.log,
# pytest.log, benchmarks.log, the benchmarks' report sections benchmarks.md, resume.log, tune.log).
# Exit 0 when every step passed, 1 when one did not, 2 when a dry run found something missing or
# the arguments are wrong.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/benchmarks/gpu_check.sh"
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
DIGITS="$ROOT/recipes/digits-dcgan.yaml"

STEPS=(install pytest throughput overhead scaling resume tune)
# seconds each step may take: a step's usual time on one H100/H200 is a guess until the first run
declare -A BUDGET=([install]=90 [pytest]=180 [throughput]=60 [overhead]=100 [scaling]=80 [resume]=90 [tune]=120)
declare -A LOG=([install]=install.log [pytest]=pytest.log [throughput]=benchmarks.log [overhead]=benchmarks.log
                [scaling]=benchmarks.log [resume]=resume.log [tune]=tune.log)

die() {
  echo "gpu_check: error: $*" >&2
  exit 2
}

# --- what a dry run checks --------------------------------------------------------------------

missing() {  # one line on stderr, counted in a file: steps run in subshells and pipelines
  echo "gpu_check: missing: $*" >&2
  echo "$*" >>"$WORK/missing"
}

check_command() {
  # The program exists; every path under the project it names exists; a python module it runs is
  # importable; and where it is ganstop, pytest or a benchmark script, every --option it passes is
  # in that command's --help, with the value among the option's choices where the help lists some.
  command -v "$1" >/dev/null 2>&1 || { missing "command not found: $1"; return; }
  local arg path found=1
  for arg in "$@"; do
    path=${arg#*=}
    path=${path%%\[*}
    [[ $path == "$ROOT"/* && ! -e $path ]] && { missing "file not found: ${path#"$ROOT"/}"; found=""; }
  done
  [[ -n $found && $1 == "$PY" ]] || return 0
  local report
  if ! report=$("$PY" - "$@" <<'EOF' 2>&1
"""Check one python command line against its own --help."""
import importlib.util
import re
import subprocess
import sys

argv = sys.argv[1:]
name = lambda prefix: " ".join(a.rsplit("/", 1)[-1] for a in prefix[1:] if a != "-m")
if argv[1] == "-m":
    module = argv[2]
    if importlib.util.find_spec(module) is None:
        sys.exit(f"python module not found: {module}")
    prefix = {"ganstop": argv[:4], "pytest": argv[:3]}.get(module)
elif argv[1].endswith(".py"):
    prefix = argv[:2]
else:
    sys.exit(0)
if prefix is None:
    sys.exit(0)
helped = subprocess.run([*prefix, "--help"], capture_output=True, text=True)
if helped.returncode != 0:
    sys.exit(f"{name(prefix)} --help failed: {(helped.stderr.strip().splitlines() or ['?'])[-1]}")
text = helped.stdout
problems = []
for i, arg in enumerate(argv[len(prefix):], len(prefix)):
    if not arg.startswith("--") or arg == "--":
        continue
    option = arg.split("=", 1)[0]
    if not re.search(rf"(^|[\s,]){re.escape(option)}([\s=,/\[]|$)", text, re.M):
        problems.append(f"{name(prefix)} has no option {option}")
        continue
    choices = re.search(rf"{re.escape(option)}\s+\[([^\]]+)\]", text)
    value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
    if choices and "|" in choices.group(1) and value not in choices.group(1).split("|"):
        problems.append(f"{name(prefix)} {option} has no choice {value!r} (its choices: {choices.group(1)})")
sys.exit("\n".join(problems) or 0)
EOF
  ); then
    while IFS= read -r line; do missing "$line"; done <<<"$report"
  fi
}

# --- running a command: for real, or printed and checked ---------------------------------------

DRY=""

show() {  # a command line as it could be pasted: arguments with spaces or quotes quoted
  local arg line="    \$"
  for arg in "$@"; do
    [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]] && line+=" $arg" || line+=" ${arg@Q}"
  done
  echo "$line${SUFFIX:-}"
}

x() {
  if [[ -n $DRY ]]; then
    show "$@"
    check_command "$@"
    return 0
  fi
  "$@"
}

x_bg() {  # x in the background; its pid in BG
  if [[ -n $DRY ]]; then
    SUFFIX=" &" show "$@"
    check_command "$@"
    BG=""
    return 0
  fi
  "$@" &
  BG=$!
}

note() {  # what a step does besides its commands
  [[ -n $DRY ]] && echo "    ($*)"
  return 0
}

# --- the steps --------------------------------------------------------------------------------

step_install() {
  local offline=()
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    offline=(--no-index --find-links "$WHEELS" --no-build-isolation)
    note "offline: $(compgen -G "$WHEELS/*.whl" | wc -l) wheels in ${WHEELS#"$ROOT"/}"
  else
    note "no wheels in ${WHEELS#"$ROOT"/}: pip reaches the index"
  fi
  if [[ -n $DRY ]] || "$PYTHON" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    note "if $PYTHON has a CUDA build of torch: the environment sees its packages and keeps them"
    note "where $PYTHON has no ensurepip: a venv without pip, which then runs $PYTHON's own"
    x "$PYTHON" -m venv --system-site-packages "$VENV" ||
      x "$PYTHON" -m venv --clear --without-pip --system-site-packages "$VENV" || return 1
    # --system-site-packages are the base interpreter's: where $PYTHON is a venv itself (a GPU
    # image's), its own site-packages hold torch, so a .pth file adds them after the new ones
    local sites
    sites=$("$PYTHON" -c 'import site; print("\n".join(f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()))') || return 1
    x "$PY" -c 'import sys, sysconfig; open(sysconfig.get_paths()["purelib"] + "/gpu-check-parent.pth", "w").write(sys.argv[1])' "$sites" || return 1
  else
    [[ ${#offline[@]} -eq 0 ]] || { echo "gpu_check: $PYTHON has no CUDA build of torch, and wheels do not carry one"; return 1; }
    note "else: a bare environment; torch comes from the index with the project"
    x "$PYTHON" -m venv "$VENV"
  fi
  x "$PY" -m pip install ${offline[@]+"${offline[@]}"} -e "$ROOT[test]" || return 1
  x "$PY" -c 'import torch, ganstop
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA GPU"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s):",
      ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))'
}

step_pytest() {
  cd "$ROOT" || return 1
  x "$PY" -m pytest -m gpu -x -q -rs -p no:cacheprovider --basetemp "$WORK/pytest" "$ROOT/tests" 2>&1 | tee "$WORK/pytest.out"
  local rc=${PIPESTATUS[0]}
  note "fails if any gpu test was skipped: they skip themselves where torch sees no GPU"
  if grep -qE "[0-9]+ skipped" "$WORK/pytest.out"; then
    echo "gpu_check: gpu tests were skipped (the reasons are above)"
    return 1
  fi
  return "$rc"
}

step_throughput() {
  x "$PY" "$ROOT/benchmarks/gpu_throughput.py" --device cuda
}

step_overhead() {
  x "$PY" "$ROOT/benchmarks/overhead.py" --device cuda --quick
}

step_scaling() {
  local gpus=N
  [[ -n $DRY ]] || gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())') || return 1
  note "N: the GPUs torch sees; with one, both rows are one process and no NCCL runs"
  x "$PY" "$ROOT/benchmarks/scaling.py" --device cuda --nproc "$gpus" --quick
}

step_resume() {
  # As tests/conftest.py's train_then_kill: SIGKILL once the run has written two checkpoints
  # (last.pt.prev exists: training is under way), then `ganstop train --resume` its run id,
  # which names its checkpoint folder. Patience only: the run trains its 40 epochs.
  cd "$WORK" || return 1
  local folder="$GANSTOP_CACHE/checkpoints" prev=""
  x_bg "$PY" -m ganstop train --recipe "$DIGITS" --device cuda --max-epochs 40 --no-progress \
    --run-name gpu-check-resume --set "metrics.every=1 train.checkpoint_seconds=0" \
    --set "stopping.criteria=[patience] stopping.patience=1000"
  note "waits until $folder/<run id>/last.pt.prev exists, then kill -9"
  if [[ -z $DRY ]]; then
    while kill -0 "$BG" 2>/dev/null; do
      prev=$(compgen -G "$folder/*/last.pt.prev" | head -n 1)
      [[ -n $prev ]] && break
      sleep 0.1
    done
    if [[ -z $prev ]]; then
      wait "$BG"
      echo "gpu_check: the run ended (exit $?) before its second checkpoint: nothing was killed"
      return 1
    fi
    kill -9 "$BG"
    wait "$BG" 2>/dev/null
    RUN_ID=$(basename "$(dirname "$prev")")
    echo "gpu_check: killed run $RUN_ID once it had written $(ls "$folder/$RUN_ID" | paste -sd " " -)"
  fi
  x "$PY" -m ganstop train --resume "$RUN_ID" --no-progress || return 1
  x "$PY" -c 'import sys
from mlflow.tracking import MlflowClient
run = MlflowClient().get_run(sys.argv[1])
print("resumed run:", run.info.status, "stopped_epoch", run.data.metrics.get("stopped_epoch"), "on", run.data.tags.get("ganstop.gpu"))
assert run.info.status == "FINISHED" and run.data.metrics.get("stopped_epoch") == 40' "$RUN_ID"
}

step_tune() {
  cd "$WORK" || return 1
  x "$PY" -m ganstop tune --recipe "$DIGITS" --pruner forecast --n-trials 4 --max-epochs 24 --device cuda \
    --storage "sqlite:///$WORK/optuna.db" --study-name gpu-check --sampler-seed 0 --no-progress || return 1
  x "$PY" -c 'import sys, optuna
study = optuna.load_study(study_name="gpu-check", storage=sys.argv[1])
states = [t.state.name for t in study.trials]
print("trials:", states)
assert len(states) == 4 and "FAIL" not in states' "sqlite:///$WORK/optuna.db"
}

# --- the whole run ----------------------------------------------------------------------------

dry_run() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "python not found: $PYTHON (set PYTHON)"
  DRY=1 PY=$PYTHON RUN_ID="<run id>"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/ganstop-gpu-check.XXXXXX") || die "cannot create a work folder"
  trap 'rm -rf "$WORK"' EXIT
  VENV="$WORK/venv" GANSTOP_CACHE="$WORK/cache"
  touch "$WORK/missing"
  "$PYTHON" -c 'import torch' 2>/dev/null || missing "torch is not importable by $PYTHON"
  command -v timeout >/dev/null 2>&1 || missing "command not found: timeout (coreutils)"
  local n=0 step problems
  for step in "${STEPS[@]}"; do
    n=$((n + 1))
    echo "step $n/${#STEPS[@]} $step (timeout ${BUDGET[$step]} s, log \$OUT/${LOG[$step]})"
    (cd "$ROOT" && "step_$step")
  done
  echo "all within GPU_CHECK_SECONDS=${GPU_CHECK_SECONDS:-510} s; exit codes and seconds in \$OUT/summary.txt"
  problems=$(grep -c . "$WORK/missing")
  ((problems == 0)) || die "the dry run found $problems missing file(s), command(s) or option(s) (above)"
  echo "dry run: every file, command and option the steps name is there"
}

run_all() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "python not found: $PYTHON (set PYTHON)"
  OUT=${OUT:-$PWD/gpu-check-out}
  mkdir -p "$OUT" || die "cannot create $OUT"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/ganstop-gpu-check.XXXXXX") || die "cannot create a work folder"
  trap 'rm -rf "$WORK"' EXIT  # the environment, tracking store and caches: what matters is in $OUT
  VENV="$WORK/venv"
  export ROOT PYTHON WHEELS OUT WORK VENV PY="$VENV/bin/python"
  # nothing lands in the checkout: tracking store, caches and the benchmarks' report go elsewhere
  export GANSTOP_CACHE="$WORK/cache" MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" MLFLOW_DISABLE_TELEMETRY=true
  export GANSTOP_BENCHMARK_REPORT="$OUT/benchmarks.md" PYTHONUNBUFFERED=1 GIT_PYTHON_REFRESH=quiet
  local summary="$OUT/summary.txt" deadline=${GPU_CHECK_SECONDS:-510} failed=() step
  {
    echo "ganstop gpu check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -m), $(nproc) cores"
    if command -v nvidia-smi >/dev/null; then echo "GPUs: $(nvidia-smi -L | paste -sd ';')"; else echo "GPUs: no nvidia-smi"; fi
    printf '%-11s %4s %8s %8s  %s\n' step rc seconds timeout log
  } >"$summary"
  for step in "${STEPS[@]}"; do
    local left=$((deadline - SECONDS)) budget=${BUDGET[$step]} rc started=$SECONDS
    ((budget > left)) && budget=$left
    if ((budget < 10)); then
      rc=124
      echo "== $step: not started, the run's $deadline s are spent" >>"$OUT/${LOG[$step]}"
    else
      echo "== $step (timeout $budget s)" >>"$OUT/${LOG[$step]}"
      timeout -k 10 "$budget" bash "$SELF" --step "$step" >>"$OUT/${LOG[$step]}" 2>&1
      rc=$?
    fi
    [[ $step == install && $rc == 0 ]] &&
      "$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")' >>"$summary"
    ((rc == 0)) || failed+=("$step")
    printf '%-11s %4s %8s %8s  %s\n' "$step" "$rc" "$((SECONDS - started))" "$budget" "${LOG[$step]}" | tee -a "$summary"
  done
  if ((${#failed[@]})); then
    echo "result: ${#failed[@]} of ${#STEPS[@]} steps failed (${failed[*]}) in $SECONDS s" | tee -a "$summary"
    exit 1
  fi
  echo "result: all ${#STEPS[@]} steps passed in $SECONDS s" | tee -a "$summary"
}

fetch_wheels() {
  local have=${1:-} version=${GPU_CHECK_PYTHON_VERSION:-3.12} tmp
  [[ -z $have || -f $have ]] || die "no such file: $have"
  tmp=$(mktemp -d) || die "cannot create a temporary folder"
  local platform=(--only-binary=:all: --python-version "$version" --implementation cp
                  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
                  --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64
                  --platform manylinux1_x86_64)
  "$PYTHON" - "$ROOT/pyproject.toml" >"$tmp/requirements.txt" <<'EOF' || die "cannot read pyproject.toml"
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
EOF
  echo "resolving the project's dependencies for CPython $version (minutes: pip reads every candidate's metadata)"
  "$PYTHON" -m pip install --dry-run --ignore-installed --quiet --report "$tmp/report.json" "${platform[@]}" \
    --target "$tmp/target" -r "$tmp/requirements.txt" || die "pip could not resolve the dependencies"
  "$PYTHON" - "$tmp/report.json" "$have" >"$tmp/pins.txt" <<'EOF' || die "cannot read pip's report"
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = set()
if sys.argv[2]:
    have = {norm(n) for n in re.split(r"[,\s]+", open(sys.argv[2]).read()) if n.strip()}
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = norm(item["metadata"]["name"]), item["metadata"]["version"]
    cuda = name in {"torch", "torchvision", "torchaudio", "triton"} or name.startswith(("nvidia-", "cuda-"))
    if not cuda and name not in have:
        print(f"{name}=={version}")
EOF
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download --quiet --no-deps "${platform[@]}" -d "$WHEELS" -r "$tmp/pins.txt" || die "pip download failed"
  rm -rf "$tmp"
  echo "$(compgen -G "$WHEELS/*.whl" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1), in $WHEELS"
}

main() {
  local mode=run chosen=() step
  while (($#)); do
    case $1 in
      --dry-run) mode=dry ;;
      --fetch-wheels) fetch_wheels "${2:-}"; return ;;
      --step)  # one step, as run_all runs it under its timeout
        [[ " ${STEPS[*]} " == *" ${2:-} "* ]] || die "no step ${2:-}"
        "step_$2"
        return ;;
      -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$SELF"; return ;;
      *) [[ " ${STEPS[*]} " == *" $1 "* ]] || die "unknown argument $1 (steps: ${STEPS[*]}; try --help)"
         chosen+=("$1") ;;
    esac
    shift
  done
  if ((${#chosen[@]})); then  # in their order in STEPS
    local all=("${STEPS[@]}")
    STEPS=()
    for step in "${all[@]}"; do
      [[ " ${chosen[*]} " == *" $step "* || ($mode == run && $step == install) ]] && STEPS+=("$step")
    done
  fi
  if [[ $mode == dry ]]; then dry_run; else run_all; fi
}

main "$@"
