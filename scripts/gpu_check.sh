#!/usr/bin/env bash
# The GPU acceptance run (issue 17 item 4): the CUDA tests, `hybridlm bench --model --generate` with fla, and the
# training throughput at the reference batch (24 x 1024, bf16, the params.yaml model) beside the targets, each part
# under its own time limit so that one hang does not eat the others, into one markdown report.
#
# Why a script: the GPU machines this project is checked on have no network and lack some of its packages (they
# travel as wheels, scripts/gpu-wheels.txt), and a lease is short: the whole run fits in 8 minutes and leaves a
# report that says what ran, what was skipped and why. docs/performance.md, "GPU acceptance run", says how to run it.
#
# Usage: scripts/gpu_check.sh [--device cuda|cpu] [--dry-run] [--report FILE] [--wheels DIR]
#   --device   cuda (default) or cpu (a rehearsal: every part runs, the CUDA tests skip themselves)
#   --dry-run  tiny sizes (params.demo.yaml's model, 1-2 repeats, a few frames): the whole run in seconds
#   --report   the markdown to write; default $GPU_CHECK_REPORT, else $OUT/gpu_check.md when $OUT is set, else
#              build/gpu_check.md. Each part's full log lands beside it (FILE without .md, then -PART.log).
#   --wheels   folder of carried wheels, installed first with `pip install --no-index --no-deps --target`
#              (default .whl; the step is skipped when the folder is absent)
# hybridlm runs from this tree (`python -m hybridlm`), uninstalled. Environment: PYTHON (default python3).
# Exit status: 0 all parts passed, 1 a part failed or ran out of time, 2 bad usage (nothing run, nothing written).
set -u
cd "$(dirname "$0")/.."

# Per-part limits in seconds (460 in all: the run fits in 8 minutes); GPU_CHECK_<PART>_S overrides one.
SETUP_S=${GPU_CHECK_SETUP_S:-60} TESTS_S=${GPU_CHECK_TESTS_S:-150} BENCH_S=${GPU_CHECK_BENCH_S:-150}
TRAIN_S=${GPU_CHECK_TRAIN_S:-100}
PYTHON=${PYTHON:-python3}
device=cuda dry_run=0 wheels=.whl
report=${GPU_CHECK_REPORT:-${OUT:+$OUT/gpu_check.md}}
report=${report:-build/gpu_check.md}

usage_error() {
    echo "gpu_check.sh: $1 (usage: scripts/gpu_check.sh [--device cuda|cpu] [--dry-run] [--report FILE]" \
         "[--wheels DIR])" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case $1 in
        --device) [ $# -ge 2 ] || usage_error "--device needs a value"; device=$2; shift 2 ;;
        --report) [ $# -ge 2 ] || usage_error "--report needs a value"; report=$2; shift 2 ;;
        --wheels) [ $# -ge 2 ] || usage_error "--wheels needs a value"; wheels=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown option '$1'" ;;
    esac
done
case $device in cuda|cpu) ;; *) usage_error "--device must be cuda or cpu, got '$device'" ;; esac
case $report in *.md) ;; *) usage_error "--report must name a .md file, got '$report'" ;; esac
mkdir -p "$(dirname "$report")" 2>/dev/null || usage_error "--report: cannot create the folder of '$report'"
command -v "$PYTHON" >/dev/null || usage_error "PYTHON: no such command '$PYTHON'"

logs=${report%.md}
partial=$report.partial
rm -f "$report"
: >"$partial"
started=$SECONDS
failed=0

say() { printf '%s\n' "$@" >>"$partial"; }

# run_part NAME LIMIT CMD...: run CMD under `timeout LIMIT`, its output in $logs-NAME.log; sets STATUS and SECS.
run_part() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "gpu_check: $name (limit ${limit}s): $*" >&2
    timeout --kill-after=10 "$limit" "$@" >"$logs-$name.log" 2>&1
    rc=$?
    SECS=$((SECONDS - start))
    case $rc in
        0) STATUS="ran, passed" ;;
        124|137) STATUS="TIMED OUT after its ${limit} s limit"; failed=1 ;;
        *) STATUS="FAILED (exit status $rc)"; failed=1 ;;
    esac
    say "**${STATUS}** in ${SECS} s (limit ${limit} s). Command: \`$*\`. Full log: \`$(basename "$logs-$name.log")\`."
    say ""
}

# fence FILE [GREP]: the file (or its lines matching the extended regex GREP, or its last 40 lines) in a code block
fence() {
    say '```'
    if [ $# -ge 2 ]; then grep -E -- "$2" "$1" | tail -n 60 >>"$partial"; else tail -n 40 "$1" >>"$partial"; fi
    say '```' ""
}

# table_max MARKDOWN AWK_CONDITION FIELD: the largest number in table column FIELD over rows matching the condition
table_max() {
    awk -F'|' "$2"' { v = $'"$3"'; gsub(/[ ,]/, "", v); if (v != "" && (best == "" || v + 0 > best + 0)) best = v }
                END { print best }' "$1" 2>/dev/null
}

if [ "$dry_run" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models: one thread is fastest and immune to a busy machine
    mode="dry run (tiny sizes: params.demo.yaml's model; numbers are not measurements)"
    params=params.demo.yaml
    bench_args=(--batch 1 --repeats 1 --frames 4 --generate-batch 2 --precision fp32)
    train_args=(--batch 2 --repeats 2)
else
    mode="full run"
    params=params.yaml
    bench_args=(--repeats 3)
    train_args=(--batch 24 --repeats 100)
fi

say "# GPU acceptance run (issue 17 item 4)" ""
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (+ local changes)"
say "$(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), device \`$device\`, $mode; commit $commit." ""

say "## 0. Set-up" ""
if [ -d "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
    site=${TMPDIR:-/tmp}/gpu_check_site
    say "Carried wheels in \`$wheels\`: $(cd "$wheels" && ls *.whl | tr '\n' ' ')" ""
    run_part setup "$SETUP_S" "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$site" "$wheels"/*.whl
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} PATH=$site/bin:$PATH
else
    say "No carried wheels (\`$wheels\` holds none): the packages below are the machine's own." ""
fi
say '```'
"$PYTHON" - "$device" >>"$partial" 2>&1 <<'EOF'
import importlib, platform, sys
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
for name in ("triton", "transformers", "fla", "pydantic", "hybridlm"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '(no version)')} from {module.__file__}")
    except Exception as exc:
        print(f"{name}: NOT IMPORTABLE ({type(exc).__name__}: {exc})")
device = sys.argv[1]
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
else:
    print("GPU: none visible to torch")
from hybridlm.ops.gated_delta import resolve_backend
try:
    print(f"gdn_backend auto on {device}: {resolve_backend('auto', device)}")
except Exception as exc:
    print(f"gdn_backend auto on {device}: {type(exc).__name__}: {exc}")
EOF
say '```' ""
gpu=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" \
      2>/dev/null)
if [ "$device" = cuda ] && [ -z "$gpu" ]; then
    say "**No CUDA GPU is visible: every part below that needs one fails or skips (--device cpu rehearses).**" ""
fi

say "## 1. CUDA tests (\`pytest -m cuda\`)" ""
# Only the modules that hold a cuda test are collected: the others may import packages this machine lacks.
mapfile -t cuda_files < <(grep -lE '^(@pytest\.mark\.cuda|pytestmark.*pytest\.mark\.cuda)' tests/test_*.py)
say "Modules with a \`cuda\` test: ${cuda_files[*]}. On a machine without a GPU they skip themselves."
say "What the marker covers, and the gaps, are listed in docs/performance.md (\"GPU acceptance run\")." ""
run_part tests "$TESTS_S" "$PYTHON" -m pytest -m cuda -v -rs -p no:cacheprovider --continue-on-collection-errors \
    "${cuda_files[@]}"
fence "$logs-tests.log" '(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS|^E  |[0-9]+ (passed|failed|skipped|deselected))'

say "## 2. \`hybridlm bench --model --generate --device $device\`" ""
run_part bench "$BENCH_S" "$PYTHON" -m hybridlm bench --model --generate --device "$device" --params "$params" \
    "${bench_args[@]}" --markdown "$logs-bench.md"
if [ -s "$logs-bench.md" ]; then cat "$logs-bench.md" >>"$partial"; say ""; else fence "$logs-bench.log"; fi
rm -f "$logs-bench.md"

say "## 3. Training throughput: the real training step on random codes, bf16, hybridlm alone" ""
run_part train "$TRAIN_S" "$PYTHON" -m hybridlm bench --model --no-peer --precision bf16 --device "$device" \
    --params "$params" "${train_args[@]}" --markdown "$logs-train.md"
if [ -s "$logs-train.md" ]; then cat "$logs-train.md" >>"$partial"; say ""; else fence "$logs-train.log"; fi

say "## Targets (issue 17, for one H100)" ""
steps=$( [ -s "$logs-train.md" ] && table_max "$logs-train.md" '$2 ~ /hybridlm/ && $3 ~ /bf16/' 5)
realtime=$(table_max "$partial" '$2 ~ /^ *1 *$/ && $3 ~ /(bf16|fp32)/' 6)
rm -f "$logs-train.md"
verdict() {  # verdict VALUE TARGET
    if [ -z "$1" ]; then echo "not measured (see the part above)"
    elif [ "$dry_run" = 1 ]; then echo "not judged (dry run)"
    elif [ "$device" != cuda ]; then echo "not judged (device $device)"
    else awk -v v="$1" -v t="$2" 'BEGIN { print (v + 0 >= t ? "met" : "NOT MET") }'; fi
}
tokens=$( [ -n "$steps" ] && awk -v v="$steps" 'BEGIN { printf "%d", v * 8 }')
say "| what | measured | target | verdict |" "| --- | ---: | ---: | --- |"
context=$("$PYTHON" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['model']['context'])" "$params")
say "| training, delayed steps/s at ${train_args[1]} x $context, bf16 | ${steps:--}${tokens:+ (${tokens} tokens/s)} | >= 1,000,000 | $(verdict "$steps" 1000000) |"
say "| one sample (batch 1, best precision), x real time | ${realtime:--} | >= 20 | $(verdict "$realtime" 20) |"
say "" "GPU: ${gpu:-none}. Whole run: $((SECONDS - started)) s (plan: within 480 s)."
mv "$partial" "$report"
echo "gpu_check: report written to $report" >&2
exit "$failed"
