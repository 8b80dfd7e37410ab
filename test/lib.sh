# test/lib.sh: shared shell helpers of the test, demo and bench scripts.
#   ensure_packages         apt-get what the build and tests need (once), and the npm packages
#                           the mocks' selftest cross-checks the Web Push mock with, and
#                           LiquidJS, the reference of the template test (test/liquid/)
#   build_and_install       make (warnings are errors) && make install
#   start_cluster DIR CONF  a throwaway cluster as an unprivileged user, socket in DIR
#   stop_cluster            stop it (also registered as an EXIT trap by start_cluster)
# Sourced, not executed.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
NOVU_CFLAGS="-Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

log() { printf '== %s\n' "$*" >&2; }

# Install the Debian packages the build, the tests and the mocks use.
ensure_packages() {
    local pkgs="postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libnghttp2-dev libssl-dev
                make gcc openssl nodejs libipc-run-perl curl ca-certificates zlib1g-dev"
    local missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    # node may come from elsewhere than Debian's package
    if command -v node >/dev/null 2>&1; then missing=$(echo "$missing" | sed 's/ nodejs//'); fi
    if [ -n "$missing" ]; then
        log "installing:$missing"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
    # Debian's postgresql-common may create and start a default cluster; it is not ours and not needed.
    # npm installs the test-only npm packages (Debian packages it apart from nodejs)
    if ! command -v npm >/dev/null 2>&1; then
        log "installing: npm"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm >/dev/null || log "npm could not be installed"
    fi
    ensure_npm_packages
    ensure_liquidjs
}

# LiquidJS (exact version: test/liquid/.npm/package-lock.json) into test/liquid/.npm/node_modules
# (not committed): the reference test/liquid/run.sh renders every case with.  That test
# fails without it; this only installs it.
ensure_liquidjs() {
    local dir
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/liquid/.npm"
    [ -d "$dir/node_modules/liquidjs" ] && return 0
    command -v npm >/dev/null 2>&1 || { log "npm not found: test/liquid/run.sh will fail"; return 0; }
    log "installing LiquidJS (the template engine's reference) into $dir"
    timeout 300 npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
        log "npm ci failed (offline?): test/liquid/run.sh will fail"
    return 0
}

# The npm packages web-push and http_ece (exact versions: test/mocks/.npm/package-lock.json)
# into test/mocks/.npm/node_modules (not committed), for test/mocks/selftest-webpush.js. The
# mocks themselves use Node's built-in modules only, so without npm or the registry this warns
# and the tests go on.
ensure_npm_packages() {
    local dir
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/mocks/.npm"
    [ -d "$dir/node_modules/web-push" ] && [ -d "$dir/node_modules/http_ece" ] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found: the Web Push mock's cross-check (test/mocks/selftest-webpush.js) cannot run"
        return 0
    fi
    log "installing the npm packages of the Web Push cross-check into $dir"
    timeout 300 npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null 2>&1 ||
        log "npm ci failed (offline?): the Web Push mock's cross-check cannot run"
    return 0
}

# Build warning-free and install into the PostgreSQL tree.
build_and_install() {
    log "building (warnings are errors)"
    make -s clean >/dev/null 2>&1 || true
    make -s PG_CFLAGS="$NOVU_CFLAGS" with_llvm=no
    $SUDO make -s install with_llvm=no >/dev/null
}

# Run a command as the cluster owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Start a throwaway cluster: start_cluster DIR [extra postgresql.conf lines...]
start_cluster() {
    CLUSTER_DIR=$1; shift
    mkdir -p "$CLUSTER_DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$CLUSTER_DIR"; chmod 755 "$CLUSTER_DIR"; fi
    export PGHOST=$CLUSTER_DIR PGPORT=${PGPORT:-54329} PGUSER=postgres PGDATABASE=postgres
    as_owner "$PGBIN/initdb" -D "$CLUSTER_DIR/data" -U postgres -A trust --no-sync >/dev/null
    # the key that encrypts integration secrets at rest: 64 hex characters,
    # readable by the server's OS user only (DESIGN 5)
    as_owner sh -c "umask 077 && openssl rand -hex 32 > '$CLUSTER_DIR/data/novu.key'"
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$CLUSTER_DIR'"
        echo "port = $PGPORT"
        echo "shared_preload_libraries = 'novu'"
        echo "fsync = off"
        echo "log_min_messages = warning"
        echo "novu.secret_key_file = '$CLUSTER_DIR/data/novu.key'"
        # the local mock providers listen on loopback, refused by default
        echo "novu.allowed_private_networks = '127.0.0.1/32'"
        for line in "$@"; do echo "$line"; done
    } | as_owner tee -a "$CLUSTER_DIR/data/postgresql.conf" >/dev/null
    trap stop_cluster EXIT
    as_owner "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w -t 60 start >/dev/null
}

# Stop the throwaway cluster (fast shutdown) if it runs.
stop_cluster() {
    if [ -n "${CLUSTER_DIR:-}" ] && [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then
        as_owner "$PGBIN/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w -t 60 stop >/dev/null || true
    fi
}
