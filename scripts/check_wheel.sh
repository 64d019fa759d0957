#!/usr/bin/env bash
# The package works installed (not editable, outside the checkout): build a wheel, install it
# into a fresh virtual environment (the dependencies come from the current Python's
# site-packages), and from another folder run the command line and two stages on a tiny volume.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip wheel . --no-deps --quiet -w "$work/wheel"
"$PYTHON" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$work"/wheel/*.whl
cd "$work"
"$work/venv/bin/python" - <<'PY'
import microvae
assert "site-packages" in microvae.__file__ and "venv" in microvae.__file__, microvae.__file__
print("installed:", microvae.__file__)
PY
"$work/venv/bin/python" -m microvae train --help > /dev/null
"$work/venv/bin/python" -m microvae synthesize --params '{"shape": [8, 48, 80], "grain_size": 20}' \
    --seed 1 --iq iq.tif --phase phase.tif
"$work/venv/bin/python" -m microvae ingest --files iq.tif --source '{"name": "tiny", "stride": 16.0}' \
    --image-size 16 --out ingested.h5
"$work/venv/bin/python" -c "import h5py; n = len(h5py.File('ingested.h5')['images']); assert n == 120, n; print('ingested', n, 'tiles from the installed wheel')"
# The workflow without the checkout's src/ (as a module from a remote source gets it): its rules
# import the installed package. A copy of workflow/ alone runs the data stages on a tiny config.
mkdir -p "$work/deployed/config"
cp -r "$repo/workflow" "$work/deployed/workflow"
cp "$repo/.test/config/config.yaml" "$work/deployed/config/config.yaml"
cd "$work/deployed"
PATH="$work/venv/bin:$PATH" "$work/venv/bin/python" -m snakemake --cores 2 --quiet rules \
    --until pack
"$work/venv/bin/python" -c "import h5py; h = h5py.File('results/dataset/dataset.h5'); print('packed', {k: len(h[k]) for k in ('train', 'val', 'test')}, 'by the workflow without src/')"
