#!/usr/bin/env bash
# Installs systempp into a temporary prefix, builds examples/echo and examples/kv against it
# with find_package(systempp), and runs them as pools: echo, reload, drain; kvd's routes,
# metrics, dedicated janitor and drain, and kvctl on the same file.
#   example_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL -- "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Runs the command (after the first two arguments) until it succeeds, polling every 50 ms
# for at most $1 seconds; on timeout names $2, shows the service's log and fails.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq 1 $((seconds * 20))); do
    "$@" && return 0
    sleep 0.05  # the poll interval; the deadline is the loop's bound
  done
  echo "timed out waiting for: $what" >&2
  cat "$tmp/log" >&2
  return 1
}

# Waits up to $2 seconds for a line matching $1 in the service's log.
wait_log() { wait_for "$2" "$1" grep -qE "$1" "$tmp/log"; }

cmake --install "$build" --prefix "$tmp/prefix" > /dev/null
cmake -S "$src/examples/echo" -B "$tmp/build" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" > /dev/null
cmake --build "$tmp/build" > "$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }

# The same example built without CMake, from the pkg-config file alone; it must link and
# answer --help.
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib/x86_64-linux-gnu/pkgconfig"
# shellcheck disable=SC2046  # the flags are meant to be split
g++ "$src/examples/echo/main.cpp" -o "$tmp/echo_pc" $(pkg-config --cflags --libs systempp) \
  > "$tmp/pc.log" 2>&1 || { cat "$tmp/pc.log" >&2; exit 1; }
"$tmp/echo_pc" --help > "$tmp/pc_help.log" 2>&1 || { cat "$tmp/pc_help.log" >&2; exit 1; }
grep -q -- '--workers' "$tmp/pc_help.log"
[ "$("$tmp/echo_pc" --version)" = "echo_service 1.0.0" ] || { echo "unexpected --version" >&2; exit 1; }

# Run as root (CI), a service must be told that its workers may run as root.
as_root=()
[ "$(id -u)" -ne 0 ] || as_root=(--allow-root)
printf '[echo]\nprefix = "one: "\n' > "$tmp/echo.toml"
"$tmp/build/echo_service" "${as_root[@]}" --workers 2 --bind 127.0.0.1:0 --name "echo_$$" --config "$tmp/echo.toml" \
  > "$tmp/log" 2>&1 &
pid=$!
wait_log 'listening on 127\.0\.0\.1:[0-9]+' 10
port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$tmp/log" | head -1 | sed 's/.*://')
wait_log 'worker\[1\] pid [0-9]+ g1 ready' 10

echo_once() {
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s\n' "$1" >&3
  IFS= read -r -t "${2:-5}" line <&3
  exec 3>&-
  printf '%s' "$line"
}
[ "$(echo_once hello)" = "one: hello" ] || { echo "unexpected echo before reload" >&2; exit 1; }

printf '[echo]\nprefix = "two: "\n' > "$tmp/echo.toml"
kill -HUP "$pid"
wait_log 'reload done' 10
[ "$(echo_once again)" = "two: again" ] || { echo "reload did not take the new prefix" >&2; exit 1; }

# --accept reuseport: lines sent to a slot whose worker is stopped wait in that slot's queue;
# when a scale-down removes the slot, its worker answers them in its drain.
worker1=$(grep -oE 'worker\[1\] pid [0-9]+ g2 ready' "$tmp/log" | head -1 | awk '{print $3}')
kill -STOP "$worker1"
clients=()
for i in $(seq 1 10); do
  (echo_once "line $i" 30 > "$tmp/answer.$i") &
  clients+=($!)
done
# Every client answered (slot 0) or connected and waiting (queued on slot 1): /proc/net/tcp,
# client side, established to the port.
port_hex=$(printf ':%04X' "$port")
settled() {
  local answered connected
  answered=$(grep -l . "$tmp"/answer.* 2>/dev/null | wc -l)
  connected=$(awk -v p="$port_hex" '$4 == "01" && substr($3, length($3) - 4) == p' /proc/net/tcp | wc -l)
  [ $((answered + connected)) -ge 10 ]
}
wait_for 10 "every line answered or queued" settled
"$tmp/build/echo_service" scale 1 --name "echo_$$" --timeout 20 > /dev/null 2>&1 &
scaler=$!
wait_log 'scale: 1 worker' 10
kill -CONT "$worker1"
wait "$scaler"
wait "${clients[@]}"
for i in $(seq 1 10); do
  [ "$(cat "$tmp/answer.$i")" = "two: line $i" ] || { echo "line $i: got [$(cat "$tmp/answer.$i")]" >&2; cat "$tmp/log" >&2; exit 1; }
done

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || { echo "echo_service exited with $status" >&2; cat "$tmp/log" >&2; exit 1; }
grep -q 'served [0-9]* connection(s)' "$tmp/log"

# --- examples/kv: an HTTP JSON service, its metrics and its maintenance script ---------
cmake -S "$src/examples/kv" -B "$tmp/kv" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" > /dev/null
cmake --build "$tmp/kv" > "$tmp/kv.log" 2>&1 || { cat "$tmp/kv.log" >&2; exit 1; }
cat > "$tmp/kv.toml" <<TOML
[systempp]
workers = 2
[store]
data-dir = "$tmp/kv-data"
ttl = 3600
[janitor]
interval = 0.1
[http]
access-log = true
TOML
: > "$tmp/log"
"$tmp/kv/kvd" "${as_root[@]}" --config "$tmp/kv.toml" --bind 127.0.0.1:0 --metrics 127.0.0.1:0 --name "kv_$$" > "$tmp/log" 2>&1 &
pid=$!
wait_log 'listening on 127\.0\.0\.1:[0-9]+' 10
port=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$tmp/log" | head -1 | sed 's/.*://')
wait_log 'metrics on http://127\.0\.0\.1:[0-9]+' 10
mport=$(grep -oE 'metrics on http://127\.0\.0\.1:[0-9]+' "$tmp/log" | head -1 | sed 's/.*://')
wait_log 'worker\[1\] pid [0-9]+ g1 ready' 10
wait_log 'worker\[16\] pid [0-9]+ g1 ready' 10  # the janitor, a dedicated process

# One HTTP/1.1 request on 127.0.0.1:$1: METHOD PATH [BODY]; prints the status code, then
# the body.
http_req() {
  local body=${4:-}
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf '%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$2" "$3" "${#body}" "$body" >&3
  local response
  response=$(cat <&3)
  exec 3>&-
  printf '%s\n' "$response" | head -1 | cut -d' ' -f2
  printf '%s\n' "${response#*$'\r\n\r\n'}"
}
expect() {  # expect WHAT GOT WANTED
  [ "$2" = "$3" ] || { printf '%s: got [%s], wanted [%s]\n' "$1" "$2" "$3" >&2; cat "$tmp/log" >&2; exit 1; }
}
expect "PUT" "$(http_req "$port" PUT /keys/greeting '{"value":"hi"}')" $'200\n{"key":"greeting","stored":true}'
expect "GET" "$(http_req "$port" GET /keys/greeting)" $'200\n{"key":"greeting","value":"hi"}'
expect "bad body" "$(http_req "$port" PUT /keys/x 'nope' | head -1)" "400"
expect "405" "$(http_req "$port" POST /keys/x | head -1)" "405"
expect "kvctl count" "$("$tmp/kv/kvctl" --config "$tmp/kv.toml" --log-level off count)" "1"
expect "kvctl list" "$("$tmp/kv/kvctl" --config "$tmp/kv.toml" --log-level off list)" "greeting"
# The janitor (a dedicated process) publishes the key count; the store's counters are the
# pool's sums.
janitor_counted() { http_req "$mport" GET /metrics | grep -q '^kv_keys 1$'; }
wait_for 5 "kv_keys 1 in /metrics" janitor_counted
metrics=$(http_req "$mport" GET /metrics)
grep -q '^kv_requests_total{op="put"} 1$' <<< "$metrics" || { echo "$metrics" >&2; exit 1; }
grep -q '"GET /keys/greeting HTTP/1.1" 200' "$tmp/log" || { echo "no access log line" >&2; exit 1; }
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || { echo "kvd exited with $status" >&2; cat "$tmp/log" >&2; exit 1; }
echo "example: installed package built (CMake and pkg-config), echo and kvd served, reloaded and drained"
