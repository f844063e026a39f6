# Shell helpers for scripts/bench/run (sourced).

bench_log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs the Debian packages the benchmarks need, only those missing; `apt-get update`
# once, and only if something is missing.
bench_install() {
  local packages=(wrk hyperfine gunicorn nginx-light gnuplot-nox python3 util-linux procps)
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  bench_log "installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # Debian starts nginx's system service on install (where services can start); the
  # benchmarks never use it: they run their own nginx with its own prefix and port.
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Kills what is left of the process groups listed in $1 (one pgid a line, written by
# bench.py while it runs servers), but only processes of those groups that are ours:
# the app binary, nginx, gunicorn, wrk, python3, taskset.
bench_kill_groups() {
  local file=$1 pg pid comm sig
  [ -s "$file" ] || return 0
  for sig in TERM KILL; do
    while read -r pg; do
      [[ "$pg" =~ ^[0-9]+$ ]] || continue
      for pid in $(pgrep -g "$pg" 2>/dev/null); do
        comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        case "$comm" in
          app|nginx|gunicorn|wrk|python3|python3.*|taskset) kill "-$sig" "$pid" 2>/dev/null || true ;;
        esac
      done
    done <"$file"
    [ "$sig" = TERM ] && sleep 1
  done
}
