#!/usr/bin/env bash
# Mixed precision on a CUDA GPU, checked end to end in a few minutes (docs/guides/mixed-precision.md):
# training (--amp off / bf16 / fp16, then a resume of the fp16 run with its GradScaler state), predict and eval
# (--precision fp32 / bf16 / fp16, eval reporting the hmean drop against fp32) and export --fp16, on a
# generated labelled set. Prints one table: what ran, at which precision, ok/FAILED/skipped, seconds, and the
# figure that matters (samples/s, hmean, images/s). Usage, from the repository root:
#
#   bash benchmarks/gpu_check.sh [WORK_DIR] [DEVICE]      # default: a temporary folder, cuda
#
# Needs PyTorch with CUDA; the training runs are short (3 epochs on 48 small images), so the hmean figures
# show that each path works and agrees with float32, not how well a model trains.
set -u
WORK=${1:-$(mktemp -d -t openocr-gpu-check-XXXX)}
DEVICE=${2:-cuda}
PY=${PY:-python}
export OPENOCR_DET_OFFLINE=1 OPENOCR_DET_NO_PROGRESS=1 OPENOCR_DET_HOME="$WORK/home"
mkdir -p "$WORK"
ROWS=()

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "CUDA is not available to PyTorch here ($($PY -c 'import torch; print(torch.__version__)')); nothing to check."
  exit 2
fi
GPU=$($PY -c "import torch; print(torch.cuda.get_device_name(), '| bf16:', torch.cuda.is_bf16_supported())")
echo "GPU: $GPU; work folder: $WORK"

row() {  # task precision status seconds figure
  ROWS+=("$(printf '| %-22s | %-9s | %-7s | %7s | %s |' "$1" "$2" "$3" "$4" "$5")")
}

run() {  # name precision log command...: runs it, records ok/FAILED and the seconds; returns its status
  local name=$1 precision=$2 log=$3; shift 3
  local start end status
  start=$(date +%s.%N)
  "$@" >"$log" 2>&1
  status=$?
  end=$(date +%s.%N)
  SECONDS_TAKEN=$(awk "BEGIN {printf \"%.1f\", $end - $start}")
  if [ $status -eq 0 ]; then STATUS=ok; elif [ $status -eq 2 ]; then STATUS=skipped; else STATUS=FAILED; fi
  return $status
}

json() {  # file python-expression-on-d
  $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null || echo "-"
}

DATA="$WORK/data"
$PY -m openocr_cli.data.synth "$DATA" --train 48 --test 16 --seed 0 --size 480x640 >/dev/null
SMALL=(-o "Train.dataset.transforms.4.EastRandomCropData.size=[320, 320]" -o Global.print_batch_step=1)
TRAIN=(--data-dir "$DATA" --train-label "$DATA/train_label.txt" --eval-label "$DATA/test_label.txt" --weights none
       --device "$DEVICE" --epochs 3 --batch-size 8 --workers 2 --lr 0.002 --seed 1 --overwrite "${SMALL[@]}")

for amp in off bf16 fp16; do
  run train "$amp" "$WORK/train-$amp.log" $PY -m openocr_cli train "${TRAIN[@]}" --amp "$amp" --output "$WORK/run-$amp"
  speed=$(tail -n 20 "$WORK/run-$amp/metrics.jsonl" 2>/dev/null | $PY -c "
import json, sys, statistics
rows = [json.loads(l) for l in sys.stdin if '\"train\"' in l]
print(f'{statistics.median(r[\"samples_per_s\"] for r in rows):.1f} samples/s' if rows else '-')")
  best=$(grep '"eval"' "$WORK/run-$amp/metrics.jsonl" 2>/dev/null | $PY -c "
import json, sys
h = [json.loads(l)['hmean'] for l in sys.stdin]
print(f'best hmean {max(h):.3f}' if h else '')")
  row "train --amp" "$amp" "$STATUS" "$SECONDS_TAKEN" "$speed $best"
done

# resume of the fp16 run: one more epoch from latest.pth (the GradScaler state comes back with it)
if [ -f "$WORK/run-fp16/latest.pth" ]; then
  run resume fp16 "$WORK/resume-fp16.log" $PY -m openocr_cli resume "$WORK/run-fp16" --epochs 4
  row "resume (GradScaler)" fp16 "$STATUS" "$SECONDS_TAKEN" "$($PY -c "
import torch; c = torch.load('$WORK/run-fp16/latest.pth', weights_only=True)
print('epoch', c['epoch'], '| scale', c['scaler']['scale'] if c.get('scaler') else None,
      '| float32 weights:', all(t.dtype == torch.float32 for t in c['state_dict'].values() if t.is_floating_point()))
" 2>/dev/null)"
fi

WEIGHTS="$WORK/run-off/best.pth"
[ -f "$WEIGHTS" ] || WEIGHTS="$WORK/run-off/latest.pth"
for precision in fp32 bf16 fp16; do
  run predict "$precision" "$WORK/predict-$precision.log" $PY -m openocr_cli predict "$DATA/test" --weights "$WEIGHTS" \
    --device "$DEVICE" --precision "$precision" --output "$WORK/predict-$precision" --no-vis
  row "predict (16 images)" "$precision" "$STATUS" "$SECONDS_TAKEN" "whole process"
  run eval "$precision" "$WORK/eval-$precision.log" $PY -m openocr_cli eval --weights "$WEIGHTS" --data-dir "$DATA" \
    --label-file "$DATA/test_label.txt" --device "$DEVICE" --precision "$precision" --json "$WORK/eval-$precision.json"
  figure="hmean $(json "$WORK/eval-$precision.json" "f\"{d['hmean']:.4f}\"")"
  [ "$precision" != fp32 ] && figure="$figure, drop vs fp32 $(json "$WORK/eval-$precision.json" \
    "f\"{d['precision_check']['drop']:+.2f} pts [{d['precision_check']['interval'][0]:+.2f}, {d['precision_check']['interval'][1]:+.2f}] {d['precision_check']['decision']}\"")"
  row "eval" "$precision" "$STATUS" "$SECONDS_TAKEN" "$figure"
done

run export fp16 "$WORK/export-fp16.log" $PY -m openocr_cli export --weights "$WEIGHTS" --fp16 --overwrite --output "$WORK/model-fp16.onnx"
row "export --fp16 (ONNX)" fp16 "$STATUS" "$SECONDS_TAKEN" "$(grep -m1 -io 'max.*diff[^|]*' "$WORK/export-fp16.log" | cut -c1-60)"
if [ "$STATUS" = ok ]; then
  run eval-onnx fp16 "$WORK/eval-onnx.log" $PY -m openocr_cli eval --onnx-model "$WORK/model-fp16.onnx" \
    --data-dir "$DATA" --label-file "$DATA/test_label.txt" --device "$DEVICE" --json "$WORK/eval-onnx.json"
  row "eval fp16 ONNX file" fp16 "$STATUS" "$SECONDS_TAKEN" "hmean $(json "$WORK/eval-onnx.json" "f\"{d['hmean']:.4f}\"")"
fi

echo
echo "| task                   | precision | status  | seconds | figure |"
echo "|------------------------|-----------|---------|--------:|--------|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Logs: $WORK (a FAILED row's log says why; skipped = this GPU does not run that precision)."
