#!/usr/bin/env bash
# Checks on a machine with a CUDA GPU:
#
#   1. the test suite with --device cuda: tests that take the `device`
#      fixture (sparse/scatter ops, gathers, pooling, pair products, layer
#      and encoder fast paths, packed solves, refinement kernels, the model's
#      backends) run on the GPU, the others on the CPU as usual;
#   2. the adaptation benchmark on the GPU (MetaMF only by default), whose
#      entries per second are set against the GPU's memory bandwidth,
#      measured by one large tensor copy.
#
#   scripts/gpu_check.sh [extra arguments of bench_adapt.py]
#
# Environment: PY (default .venv/bin/python), OUT (default results/gpu),
# DEVICE (default cuda), GNN_METAMF_DATA for the real matrices.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/gpu}
DEVICE=${DEVICE:-cuda}

"$PY" - "$DEVICE" <<'EOF'
import sys
import torch
device = torch.device(sys.argv[1])
if device.type == 'cuda' and not torch.cuda.is_available():
    sys.exit(f'gpu_check: no CUDA device visible to torch '
             f'{torch.__version__} (built for CUDA {torch.version.cuda})')
name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
print(f'device    {device}  {name}  torch {torch.__version__}')
EOF

echo "== tests (--device $DEVICE)"
"$PY" -m pytest tests -q -x --device "$DEVICE"

echo "== adaptation benchmark on $DEVICE"
mkdir -p "$OUT"
"$PY" scripts/bench_adapt.py --device "$DEVICE" --methods metamf \
    --threads "$(nproc)" --copy-mib 4096 --out "$OUT" --no-progress "$@" \
    | tee "$OUT/bench_adapt.log"

# Entries per second against the bandwidth: how many bytes the GPU could
# have moved per imputed entry in the time one entry took.
"$PY" - "$OUT/adapt.csv" <<'EOF'
import csv
import sys
for row in csv.DictReader(open(sys.argv[1])):
    bytes_per_entry = float(row['bytes_per_entry_at_bandwidth'])
    print(f"bandwidth {row['matrix']:<18} {float(row['entries_per_s']):12.3e} "
          f"entries/s  = {bytes_per_entry:8.0f} bytes of copy bandwidth "
          f"per entry")
EOF
