#!/usr/bin/env bash
# `make run`: build, run and smoke-test the bundled example site.
# Uses the pinned official nginx image when it is here or can be pulled, and says so and
# falls back to the local base image from scripts/testenv.sh when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
shipit=.venv/bin/shipit
official=$($shipit config --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["settings"]["base_image"])')
local_base="shipit-local/nginx:bookworm"

if docker image inspect "$official" >/dev/null 2>&1; then
  base="$official"
elif pull_error=$(docker pull --quiet "$official" 2>&1 >/dev/null); then
  base="$official"
else
  echo "run: cannot pull $official (${pull_error##*: }); falling back to the local base image $local_base" >&2
  base="$local_base"
fi
$shipit build --base-image "$base"
$shipit run
