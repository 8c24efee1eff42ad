#!/usr/bin/env bash
# Benchmark what provider-router adds on top of a direct call to the same upstream.
# See bench/README.md. Everything it starts is stopped on exit; every step is bounded.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")

DURATION=${BENCH_DURATION:-10}          # seconds per measured wrk run
WARMUP=${BENCH_WARMUP:-2}               # seconds of warm-up before each measured run (0: none)
CONCURRENCY=${BENCH_CONCURRENCY:-"1 16 64"}
MODES=${BENCH_MODES:-"json stream"}
TARGETS=${BENCH_TARGETS:-"direct proxy"}
NGINX_PORT=${BENCH_NGINX_PORT:-18081}
PROXY_PORT=${BENCH_PROXY_PORT:-18080}
PROXY_CORE=${BENCH_PROXY_CORE:-0}       # the proxy's one uvicorn worker
LOAD_CORE=${BENCH_LOAD_CORE:-1}         # nginx + wrk
WRK_THREADS=${BENCH_WRK_THREADS:-1}
PYTHON=${BENCH_PYTHON:-python3}         # runs canned.py / report.py (stdlib only)
RESULTS=${BENCH_RESULTS_DIR:-$HERE/results}
STARTUP_TIMEOUT=${BENCH_STARTUP_TIMEOUT:-30}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
missing=()
[[ -x $NGINX_BIN ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v timeout >/dev/null || missing+=(coreutils)
command -v "$PYTHON" >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    log "missing prerequisites; install them with:"
    printf '    apt-get install -y %s\n' "${missing[*]}" >&2
    exit 1
fi

want_proxy=0
[[ " $TARGETS " == *" proxy "* ]] && want_proxy=1
if ((want_proxy)); then
    if [[ -n ${PROVIDER_ROUTER_BIN:-} ]]; then
        PROXY_BIN=$PROVIDER_ROUTER_BIN
    elif [[ -x $REPO/.venv/bin/provider-router ]]; then
        PROXY_BIN=$REPO/.venv/bin/provider-router
    else
        PROXY_BIN=$(command -v provider-router) \
            || die "provider-router not found: set PROVIDER_ROUTER_BIN or BENCH_TARGETS=direct"
    fi
fi

ncpu=$(nproc --all)
for core in "$PROXY_CORE" "$LOAD_CORE"; do
    ((core < ncpu)) || die "core $core does not exist (nproc=$ncpu); set BENCH_PROXY_CORE/BENCH_LOAD_CORE"
done
[[ $PROXY_CORE != "$LOAD_CORE" ]] || log "WARNING: proxy and load share core $PROXY_CORE"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy "$NGINX_PORT" && die "port $NGINX_PORT is in use (set BENCH_NGINX_PORT)"
if ((want_proxy)); then
    port_busy "$PROXY_PORT" && die "port $PROXY_PORT is in use (set BENCH_PROXY_PORT)"
fi

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/provider-router-bench.XXXXXX")
chmod 755 "$TMP"   # nginx's worker may run as 'nobody' and must read the canned files
PIDS=()

# shellcheck disable=SC2317  # called from the EXIT trap
stop_pid() {  # TERM, wait up to 10 s, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $pid did not stop on SIGTERM; killing"
    kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    wait 2>/dev/null || true
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- fixtures + nginx
"$PYTHON" "$HERE/canned.py" "$TMP" --nginx-port "$NGINX_PORT"
# BENCH_PROXY_TOML: extra settings for the proxy, appended to its config (for example
# $'[logging]\naccess_log = false' to measure what the access line costs).
[[ -z ${BENCH_PROXY_TOML:-} ]] || printf '\n%s\n' "$BENCH_PROXY_TOML" >>"$TMP/proxy.toml"
mkdir -p "$RESULTS" "$TMP/runs"
cp "$TMP/nginx.conf" "$TMP/proxy.toml" "$RESULTS/"

taskset -c "$LOAD_CORE" "$NGINX_BIN" -p "$TMP/" -c "$TMP/nginx.conf" -e "$TMP/error.log" \
    >"$TMP/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for ((i = 0; i < 50; i++)); do
    port_busy "$NGINX_PORT" && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$TMP/nginx.out" "$TMP/error.log" >&2 || true; die "nginx exited"; }
    sleep 0.1
done
port_busy "$NGINX_PORT" || die "nginx did not listen on $NGINX_PORT"
log "nginx $NGINX_PID on 127.0.0.1:$NGINX_PORT (cores $(taskset -cp "$NGINX_PID" | awk '{print $NF}'))"

DIRECT=http://127.0.0.1:$NGINX_PORT
"$PYTHON" "$HERE/report.py" check "$DIRECT/json/v1/chat/completions" "$TMP/req-json.json" json
"$PYTHON" "$HERE/report.py" check "$DIRECT/sse/v1/chat/completions" "$TMP/req-sse.json" stream

# ---------------------------------------------------------------- proxy
PROXY_PID=
PROXY_RSS_IDLE=0
proxy_ticks() {  # utime+stime of the proxy process (all threads), in clock ticks
    sed 's/^.*) //' "/proc/$PROXY_PID/stat" | awk '{print $12 + $13}'
}
if ((want_proxy)); then
    PROVIDER_ROUTER_ADMIN_TOKEN=bench-admin taskset -c "$PROXY_CORE" "$PROXY_BIN" serve \
        --config "$TMP/proxy.toml" --host 127.0.0.1 --port "$PROXY_PORT" \
        --database "${BENCH_DATABASE_URL:-sqlite:///$TMP/bench.db}" >"$TMP/proxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    if ! timeout "$((STARTUP_TIMEOUT + 5))" "$PYTHON" "$HERE/report.py" wait \
        "http://127.0.0.1:$PROXY_PORT/health" --timeout "$STARTUP_TIMEOUT"; then
        log "proxy log (tail):"; tail -n 40 "$TMP/proxy.log" >&2 || true
        die "proxy did not become healthy (run with BENCH_TARGETS=direct for the direct half only)"
    fi
    # taskset execs the console script, whose shebang execs python: same pid, verify it.
    exe=$(readlink "/proc/$PROXY_PID/exe")
    [[ $(basename "$exe") == python* ]] || die "pid $PROXY_PID is $exe, not python"
    cmdline=$(tr '\0' ' ' <"/proc/$PROXY_PID/cmdline")
    [[ $cmdline == *provider-router* ]] || log "WARNING: pid $PROXY_PID runs: $cmdline"
    children=$(cat /proc/"$PROXY_PID"/task/*/children 2>/dev/null | tr -s ' \n' ' ')
    [[ -z ${children// /} ]] || log "WARNING: proxy has child processes ($children); RSS is the parent's only"
    PROXY_RSS_IDLE=$(awk '/^VmRSS:/{print $2}' "/proc/$PROXY_PID/status")
    log "proxy $PROXY_PID ($exe) on 127.0.0.1:$PROXY_PORT (cores $(taskset -cp "$PROXY_PID" | awk '{print $NF}'), idle RSS ${PROXY_RSS_IDLE} kB)"
    PROXY=http://127.0.0.1:$PROXY_PORT
    "$PYTHON" "$HERE/report.py" check "$PROXY/v1/chat/completions" "$TMP/req-json.json" json
    "$PYTHON" "$HERE/report.py" check "$PROXY/v1/chat/completions" "$TMP/req-sse.json" stream
fi

# ---------------------------------------------------------------- load
wrk_run() {  # url body_file seconds conc out [extra wrk args...]
    local url=$1 body=$2 secs=$3 conc=$4 out=$5
    shift 5
    local threads=$WRK_THREADS
    ((threads <= conc)) || threads=$conc
    BENCH_BODY=$(<"$body") timeout --foreground -k 5 "$((secs + 30))" \
        taskset -c "$LOAD_CORE" wrk -t"$threads" -c"$conc" -d"${secs}s" --timeout 10s \
        -s "$HERE/post.lua" "$@" "$url" >"$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed: $url c=$conc"; }
}

for mode in $MODES; do
    case $mode in
        json) body=$TMP/req-json.json; direct_path=/json/v1/chat/completions ;;
        stream) body=$TMP/req-sse.json; direct_path=/sse/v1/chat/completions ;;
        *) die "unknown mode $mode (json|stream)" ;;
    esac
    for target in $TARGETS; do
        case $target in
            direct) url=$DIRECT$direct_path ;;
            proxy) url=$PROXY/v1/chat/completions ;;
            *) die "unknown target $target (direct|proxy)" ;;
        esac
        for conc in $CONCURRENCY; do
            name=$mode-$target-c$conc
            if ((WARMUP > 0)); then
                wrk_run "$url" "$body" "$WARMUP" "$conc" "$TMP/warmup-$name.txt"
            fi
            [[ $target != proxy ]] || before=$(proxy_ticks)
            wrk_run "$url" "$body" "$DURATION" "$conc" "$TMP/runs/$name.txt" --latency
            if [[ $target == proxy ]]; then
                echo "$before $(proxy_ticks)" >"$TMP/runs/$name.cpu"
                kill -0 "$PROXY_PID" 2>/dev/null || die "proxy died during $name"
            fi
            log "$(printf '%-20s %s' "$name" "$(grep -E '^Requests/sec' "$TMP/runs/$name.txt")")"
        done
    done
done

# ---------------------------------------------------------------- report
PROXY_HWM=0
if [[ -n $PROXY_PID ]]; then
    PROXY_HWM=$(awk '/^VmHWM:/{print $2}' "/proc/$PROXY_PID/status")
fi
cp -r "$TMP/runs" "$RESULTS/"
rc=0
"$PYTHON" "$HERE/report.py" render "$TMP/runs" \
    --json-out "$RESULTS/latest.json" --md-out "$RESULTS/latest.md" \
    --duration "$DURATION" --warmup "$WARMUP" --clk-tck "$(getconf CLK_TCK)" \
    --proxy-hwm-kb "$PROXY_HWM" --proxy-rss-idle-kb "$PROXY_RSS_IDLE" \
    --meta "targets=$TARGETS" --meta "wrk_threads=$WRK_THREADS" \
    --meta "pinning=proxy core $PROXY_CORE; nginx+wrk core $LOAD_CORE" \
    --meta "nginx=$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')" \
    --meta "wrk=$(wrk -v 2>&1 | head -n1 | awk '{print $2}')" \
    --meta "commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)" \
    --meta "cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)" \
    --meta "kernel=$(uname -r)" || rc=$?
log "results: $RESULTS/latest.json, $RESULTS/latest.md"
exit "$rc"
