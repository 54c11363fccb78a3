#!/usr/bin/env bash
# The peer benchmark, one command (see docs/performance.md):
#   bench/peers/run.sh poller 5000        # 5,000 servers at 1 s, Rollcall vs Prometheus
#   bench/peers/run.sh poller 50000       # 50,000 servers at 10 s
#   bench/peers/run.sh poller N INTERVAL  # any fleet and interval (seconds)
#   bench/peers/run.sh poller-pg 5000     # the poller on SQLite, then on PostgreSQL, same run
#   bench/peers/run.sh cluster 30000      # three poller nodes on one PostgreSQL
#   bench/peers/run.sh attendant          # one attendant vs node_exporter
# Builds the release binary, installs what the mode needs when missing (as root): Debian's
# prometheus and prometheus-node-exporter (poller, attendant; the system instances they
# start are stopped), postgresql (poller-pg, cluster: the bench starts a cluster of its own;
# a system cluster this script installed is stopped), then runs bench.py. Run it on a
# quiet machine: other work on either core distorts every figure. Env: WINDOW, WARMUP (s),
# KNOBS (simulator flags), KEEP=1 keeps the work dir, MEASURED_CORE / HELPER_CORE,
# FAILOVER=1 (cluster: kill -9 one node after the window).
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
case "${1:-}" in
    poller-pg | cluster)
        ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
        ;;
    *)
        command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
        command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
        ;;
esac
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian's postgresql starts a system cluster; one just installed for the bench would
    # hold CPU during the run. A PostgreSQL that was already there is left alone.
    case " ${need[*]} " in *" postgresql "*) service postgresql stop >/dev/null 2>&1 || true ;; esac
fi
# Packages start system-wide instances; they would hold ports and CPU during the run.
for svc in prometheus prometheus-node-exporter; do
    service "$svc" stop >/dev/null 2>&1 || true
done

cargo build --release -q -p rollcall
ulimit -n "$(ulimit -Hn)"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC') | $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) | $(free -g | awk '/Mem:/ {print $2 " GB RAM"}') | load $(cut -d' ' -f1-3 /proc/loadavg)"
exec python3 bench/peers/bench.py "$@"
