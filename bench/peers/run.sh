#!/usr/bin/env bash
# The peer benchmark, one command (see docs/performance.md):
#   bench/peers/run.sh poller 5000        # 5,000 servers at 1 s, Rollcall vs Prometheus
#   bench/peers/run.sh poller 50000       # 50,000 servers at 10 s
#   bench/peers/run.sh poller N INTERVAL  # any fleet and interval (seconds)
#   bench/peers/run.sh attendant          # one attendant vs node_exporter
# Builds the release binary, installs Debian's prometheus and prometheus-node-exporter when
# missing (as root), stops the system instances they start, then runs bench.py. Run it on a
# quiet machine: other work on either core distorts every figure. Env: WINDOW, WARMUP (s),
# KNOBS (simulator flags), KEEP=1 keeps the work dir, MEASURED_CORE / HELPER_CORE.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Packages start system-wide instances; they would hold ports and CPU during the run.
for svc in prometheus prometheus-node-exporter; do
    service "$svc" stop >/dev/null 2>&1 || true
done

cargo build --release -q -p rollcall
ulimit -n "$(ulimit -Hn)"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC') | $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) | $(free -g | awk '/Mem:/ {print $2 " GB RAM"}') | load $(cut -d' ' -f1-3 /proc/loadavg)"
exec python3 bench/peers/bench.py "$@"
