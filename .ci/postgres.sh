# shellcheck shell=bash
# Throwaway PostgreSQL server for the test suite.
#
# Sourced by .ci/run; a developer can use it by hand too:
#
#     source .ci/postgres.sh && start_postgres
#     .venv/bin/python -m pytest -q
#     stop_postgres
#
# start_postgres makes sure PostgreSQL server binaries exist (installing
# Debian's `postgresql` package with apt-get when they don't and we are root),
# creates a fresh cluster in a temporary directory, starts it on a free port
# of 127.0.0.1 with trust auth, creates the database `statemachine_test` and
# exports STATEMACHINE_TEST_PG. stop_postgres stops the server and removes the
# temporary directory.
#
# With STATEMACHINE_PG_NO_FSYNC=1 (what .ci/run sets) the server does not fsync
# (fsync and full_page_writes off): a test database never has to survive a
# power loss, and creating and dropping one database per test then costs
# ~60 ms instead of ~500. A killed or restarted server still keeps every commit
# (its writes are in the OS's cache); benchmarks want the default.
#
# This file changes no shell options, so it is safe to source into an
# interactive shell; every step checks its own errors and returns non-zero.

_smci_log() { printf '[postgres] %s\n' "$*" >&2; }

# Print the directory holding pg_ctl/initdb/postgres, or fail.
_smci_find_pg_bindir() {
    local d candidate
    # Debian layout, newest major version first.
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5 -rn); do
        if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    # Anything on PATH (resolving symlinks, e.g. /usr/local/bin/pg_ctl).
    candidate=$(command -v pg_ctl 2>/dev/null) || return 1
    candidate=$(readlink -f "$candidate") || return 1
    d=$(dirname "$candidate")
    if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
        printf '%s\n' "$d"
        return 0
    fi
    return 1
}

# Install Debian's postgresql package without creating/starting a "main" cluster.
_smci_install_postgres() {
    if [ "$(id -u)" -ne 0 ]; then
        _smci_log "PostgreSQL server binaries not found and not root: install PostgreSQL (e.g. apt-get install postgresql) and retry"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _smci_log "PostgreSQL server binaries not found and apt-get is unavailable"
        return 1
    fi
    _smci_log "PostgreSQL server binaries not found; installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || return 1
    # postgresql-common first, so its createcluster.conf exists and we can turn
    # off the automatic "main" cluster (which would otherwise be created and
    # possibly started on port 5432 by the postgresql-15 postinst).
    apt-get install -y -q --no-install-recommends postgresql-common || return 1
    if [ -f /etc/postgresql-common/createcluster.conf ]; then
        sed -ri 's/^#?[[:space:]]*(create_main_cluster)[[:space:]]*=.*$/\1 = false/' \
            /etc/postgresql-common/createcluster.conf || return 1
    fi
    apt-get install -y -q --no-install-recommends postgresql || return 1
}

# Echo the unprivileged user to run the server as (root only).
_smci_pg_user() {
    if id -u postgres >/dev/null 2>&1; then
        printf 'postgres\n'
        return 0
    fi
    if ! id -u smci >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin smci >&2 || return 1
    fi
    printf 'smci\n'
}

# Run a command as $_SMCI_PG_OSUSER (or as ourselves when not root), from the
# temp dir so the unprivileged user never needs access to our cwd.
_smci_as_pg_user() {
    if [ "$(id -u)" -ne 0 ]; then
        (cd "$_SMCI_PG_DIR" && "$@")
    elif command -v runuser >/dev/null 2>&1; then
        (cd "$_SMCI_PG_DIR" && runuser -u "$_SMCI_PG_OSUSER" -- "$@")
    else
        (cd "$_SMCI_PG_DIR" && su "$_SMCI_PG_OSUSER" -s /bin/sh -c "$(printf '%q ' "$@")")
    fi
}

_smci_free_port() {
    local py
    py=$(command -v python3 || command -v python) || return 1
    "$py" - <<'EOF'
import socket
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
EOF
}

stop_postgres() {
    local pid i
    if [ -n "${_SMCI_PG_DIR:-}" ] && [ -d "$_SMCI_PG_DIR" ]; then
        if [ -n "${_SMCI_PG_BIN:-}" ] && [ -f "$_SMCI_PG_DIR/data/postmaster.pid" ]; then
            pid=$(head -n 1 "$_SMCI_PG_DIR/data/postmaster.pid" 2>/dev/null || true)
            _smci_as_pg_user "$_SMCI_PG_BIN/pg_ctl" stop -D "$_SMCI_PG_DIR/data" \
                -m fast -w -t 60 >/dev/null 2>&1 \
                || _smci_as_pg_user "$_SMCI_PG_BIN/pg_ctl" stop -D "$_SMCI_PG_DIR/data" \
                    -m immediate -w -t 30 >/dev/null 2>&1 \
                || _smci_log "could not stop the server in $_SMCI_PG_DIR cleanly"
            # pg_ctl returns once postmaster.pid is gone; make sure the
            # postmaster process itself has exited too (kill it as a last resort).
            case "$pid" in
                '' | *[!0-9]*) ;;
                *)
                    for i in $(seq 1 50); do
                        kill -0 "$pid" 2>/dev/null || break
                        sleep 0.1
                    done
                    if kill -0 "$pid" 2>/dev/null; then
                        _smci_log "postmaster $pid still running; killing it"
                        kill -9 "$pid" 2>/dev/null || true
                    fi
                    ;;
            esac
        fi
        rm -rf -- "$_SMCI_PG_DIR"
    fi
    unset _SMCI_PG_DIR _SMCI_PG_BIN _SMCI_PG_OSUSER _SMCI_PG_PORT STATEMACHINE_TEST_PG
    return 0
}

start_postgres() {
    local bindir user port dir
    if [ -n "${_SMCI_PG_DIR:-}" ]; then
        _smci_log "a server from an earlier start_postgres is still set up; stopping it first"
        stop_postgres
    fi

    if ! bindir=$(_smci_find_pg_bindir); then
        _smci_install_postgres || return 1
        bindir=$(_smci_find_pg_bindir) || {
            _smci_log "PostgreSQL installed but no pg_ctl/initdb/postgres found in /usr/lib/postgresql/*/bin"
            return 1
        }
    fi

    if [ "$(id -u)" -eq 0 ]; then
        user=$(_smci_pg_user) || { _smci_log "could not find or create an unprivileged user"; return 1; }
    else
        user=$(id -un)
    fi
    port=$(_smci_free_port) || { _smci_log "could not pick a free port"; return 1; }
    # A short path under /tmp: the unix socket path must stay below ~100 bytes,
    # and the unprivileged user must be able to reach it.
    dir=$(mktemp -d /tmp/smci-pg.XXXXXX) || return 1

    # From here on stop_postgres knows how to clean up.
    _SMCI_PG_DIR=$dir
    _SMCI_PG_BIN=$bindir
    _SMCI_PG_OSUSER=$user
    _SMCI_PG_PORT=$port
    if [ "$(id -u)" -eq 0 ]; then
        chown "$user:" "$dir" || { stop_postgres; return 1; }
    fi
    chmod 700 "$dir"

    _smci_log "initdb ($bindir) as $user in $dir"
    if ! _smci_as_pg_user "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        _smci_log "initdb failed"
        stop_postgres
        return 1
    fi
    if ! _smci_as_pg_user sh -c 'cat >> "$1"' sh "$dir/data/postgresql.conf" <<EOF
# added by .ci/postgres.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
${STATEMACHINE_PG_NO_FSYNC:+fsync = off}
${STATEMACHINE_PG_NO_FSYNC:+full_page_writes = off}
EOF
    then
        _smci_log "could not write postgresql.conf"
        stop_postgres
        return 1
    fi

    _smci_log "starting on 127.0.0.1:$port"
    if ! _smci_as_pg_user "$bindir/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        >/dev/null; then
        cat "$dir/server.log" >&2 2>/dev/null
        _smci_log "pg_ctl start failed"
        stop_postgres
        return 1
    fi

    # The server trusts every local TCP connection; connect as the superuser
    # `postgres` created by initdb -U postgres.
    if ! "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c 'CREATE DATABASE statemachine_test' >/dev/null; then
        _smci_log "could not create database statemachine_test"
        stop_postgres
        return 1
    fi

    export STATEMACHINE_TEST_PG="postgresql+psycopg://postgres@127.0.0.1:$port/statemachine_test"
    _smci_log "ready: STATEMACHINE_TEST_PG=$STATEMACHINE_TEST_PG"
}
