#!/usr/bin/env bash
# deploy/'s systemd units as systemd 252 reads them (`systemd-analyze verify`), every warning
# counted as a failure (to systemd an unknown or misspelt key is only a warning), and the
# service's command line as the binary reads it.
#   verify_units.sh SOURCE_DIR APP_BINARY
set -euo pipefail
src=$1
app=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The unit runs the installed binary; the one just built stands in for it.
sed "s|/usr/local/bin/systempp-app|$app|g" "$src/deploy/systempp-app.service" > "$tmp/systempp-app.service"
cp "$src/deploy/systempp-app.socket" "$tmp/"
out=$(systemd-analyze verify --man=no "$tmp/systempp-app.socket" "$tmp/systempp-app.service" 2>&1) || {
  echo "systemd-analyze verify failed:" >&2
  echo "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "systemd-analyze verify warned:" >&2
  echo "$out" >&2
  exit 1
fi

# ExecStart= with its line continuations joined, ${APP_WORKERS} as the unit sets it, and
# the paths systemd would create moved under $tmp: the binary must accept every option.
workers=$(sed -n 's/^Environment=APP_WORKERS=//p' "$src/deploy/systempp-app.service")
cmd=$(sed -n '/^ExecStart=/,/[^\\]$/p' "$src/deploy/systempp-app.service" | sed 's/\\$//' | tr '\n' ' ' |
  sed "s|^ExecStart=/usr/local/bin/systempp-app||; s|\${APP_WORKERS}|$workers|; s|/run/systempp-app|$tmp|; s|/etc/systempp-app|$tmp|; s|/var/log/systempp-app|$tmp|")
: > "$tmp/app.toml"
# shellcheck disable=SC2086  # the command line is meant to be split into its words
if ! printed=$("$app" $cmd --print-config 2>&1); then
  echo "the unit's ExecStart options are refused: $cmd" >&2
  echo "$printed" >&2
  exit 1
fi
grep -q "^workers = $workers  # command line" <<< "$printed" || { echo "ExecStart's --workers not taken: $printed" >&2; exit 1; }
echo "deploy units verified"
