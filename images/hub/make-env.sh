#!/usr/bin/env bash
# images/hub/make-env.sh DIR: the hub image's Python environment in a virtualenv DIR, to test it
# without a container engine (tests/integration/test_hub_image_env.py). It holds what the
# Dockerfile adds to the chart's hub image and nothing else: images/hub/requirements.txt and
# the product's wheel built from this checkout (never the dev platform, devplatform/).
# The pinned packages go into a clean virtualenv once (again when requirements.txt or the Python
# changes); the wheel is rebuilt and reinstalled whenever the product's files change, so the
# environment has the checkout's code. `pip check` then proves the pins are the whole
# environment: everything goes in with --no-deps, as in the Dockerfile.
# PYTHON picks the interpreter (default python3; the image has 3.12).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$1
python=${PYTHON:-python3}
requirements="$root/images/hub/requirements.txt"
# What the Dockerfile's wheel stage copies.
product=(pyproject.toml setup.cfg README.md aiinfn_hub)

version=$("$python" -c 'import sys; print(sys.version.split()[0])')
stamp="$version $(sha256sum "$requirements" | cut -c1-16)"
if [ "$(cat "$dir/.aiinfn-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "make-env: preparing $dir (the hub image's environment)" >&2
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip
  "$dir/bin/pip" install -q --no-deps -r "$requirements"
  echo "$stamp" > "$dir/.aiinfn-stamp"
fi

product_stamp=$(cd "$root" && find "${product[@]}" -type f ! -path '*/__pycache__/*' -print0 \
  | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ "$(cat "$dir/.aiinfn-product-stamp" 2>/dev/null)" != "$product_stamp" ]; then
  # The wheel from a copy of those files, so no build/ folder of the checkout (which may hold
  # modules since removed) ends up in it.
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir "$tmp/src"
  (cd "$root" && cp -r "${product[@]}" "$tmp/src/")
  "$dir/bin/pip" wheel -q --no-deps --wheel-dir "$tmp/wheel" "$tmp/src"
  "$dir/bin/pip" install -q --no-deps --force-reinstall "$tmp"/wheel/*.whl
  if ! problems=$("$dir/bin/pip" check); then
    echo "make-env: $dir is incomplete: $problems" >&2
    exit 1
  fi
  echo "$product_stamp" > "$dir/.aiinfn-product-stamp"
fi
