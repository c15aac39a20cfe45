#!/usr/bin/env bash
# Installs what Shield's build and tests need. Sourced by scripts/test.sh and scripts/demo.sh, or run
# on its own. Idempotent: every step checks before it acts, and downloads are cached in .cache/.
#
# - protoc (Debian's protobuf-compiler), needed by etcd-client at build time;
# - systemd-analyze, ip, arping and setpriv, for the unit-file and VIP tests;
# - PostgreSQL 15 server binaries (Debian's postgresql-15), if pg_config --bindir has none;
# - etcd 3.5 (etcd-server, etcd-client from Debian trixie) and Consul 1.8 (consul from Debian
#   bullseye): static binaries inside Debian packages of other releases, fetched with
#   `apt-get download` through a separate sources file and lists directory, so the machine's own
#   apt configuration is never changed, and unpacked with `dpkg -x` into $SHIELD_CACHE/servers.
#
# Exports SHIELD_ETCD_BIN, SHIELD_ETCDCTL_BIN, SHIELD_CONSUL_BIN and SHIELD_PG_BINDIR.
set -euo pipefail
SHIELD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SHIELD_ROOT
# Downloads are cached outside the checkout, so fresh clones on the same machine reuse them.
export SHIELD_CACHE="${SHIELD_CACHE:-${XDG_CACHE_HOME:-${HOME:-$SHIELD_ROOT}/.cache}/shield}"
mkdir -p "$SHIELD_CACHE"

say() { echo "setup: $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    say "cargo is not installed; install a Rust toolchain (rustup) first"
    exit 1
fi

apt_updated=""
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        say "need root to apt-get install $*; install them and re-run"
        exit 1
    fi
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >/dev/null
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---- protoc --------------------------------------------------------------------------------
if ! command -v protoc >/dev/null 2>&1; then
    say "installing protobuf-compiler"
    apt_install protobuf-compiler
fi

# ---- systemd-analyze (checks the shipped unit files) and iproute2 (VIP tests) ----------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
    say "installing systemd (for systemd-analyze)"
    apt_install systemd
fi
if ! command -v ip >/dev/null 2>&1; then
    say "installing iproute2"
    apt_install iproute2
fi
if ! command -v arping >/dev/null 2>&1; then
    say "installing iputils-arping"
    apt_install iputils-arping
fi
if ! command -v setpriv >/dev/null 2>&1; then
    say "installing util-linux (setpriv)"
    apt_install util-linux
fi

# ---- PostgreSQL 15 -------------------------------------------------------------------------
pg_bindir() {
    if [ -x /usr/lib/postgresql/15/bin/postgres ]; then
        echo /usr/lib/postgresql/15/bin
    elif command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]; then
        pg_config --bindir
    fi
}
if [ -z "$(pg_bindir)" ]; then
    say "installing PostgreSQL 15 server binaries"
    apt_install postgresql-15 || apt_install postgresql
fi
SHIELD_PG_BINDIR="$(pg_bindir)"
export SHIELD_PG_BINDIR

# ---- an unprivileged user for the database ------------------------------------------------
# initdb and postgres refuse to run as root, and so does shield: when the tests run as root, the
# nodes they start run as this user.
export SHIELD_TEST_USER="${SHIELD_TEST_USER:-shieldtest}"
if [ "$(id -u)" = 0 ] && ! id "$SHIELD_TEST_USER" >/dev/null 2>&1; then
    say "creating the unprivileged user $SHIELD_TEST_USER"
    useradd --system --create-home --shell /usr/sbin/nologin "$SHIELD_TEST_USER"
fi

# ---- etcd and Consul from other Debian releases ---------------------------------------------
servers="$SHIELD_CACHE/servers"
mirror_uri() {
    # The machine's own Debian mirror: the first URIs line of its deb822 sources, else the first
    # deb line of sources.list.
    local f uri=""
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '/^URIs:/ {print $2; exit}' "$f")
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
    fi
    echo "${uri%/}"
}

# fetch_debs SUITE PACKAGE... : downloads the packages of SUITE into the cache and unpacks them.
fetch_debs() {
    local suite=$1
    shift
    local dir="$SHIELD_CACHE/apt-$suite" uri
    uri=$(mirror_uri)
    if [ -z "$uri" ]; then
        say "cannot find this machine's Debian mirror in /etc/apt; cannot fetch $*"
        exit 1
    fi
    mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/debs" "$servers"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    if [ -f "$keyring" ]; then
        echo "deb [signed-by=$keyring] $uri $suite main" >"$dir/sources.list"
    else
        echo "deb $uri $suite main" >"$dir/sources.list"
    fi
    local opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::Archives=$dir/archives"
        -o Acquire::Languages=none -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
    local missing=()
    local p
    for p in "$@"; do
        compgen -G "$dir/debs/${p}_*.deb" >/dev/null || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "fetching ${missing[*]} from Debian $suite"
        apt-get "${opts[@]}" update -qq >/dev/null
        (cd "$dir/debs" && apt-get "${opts[@]}" download "${missing[@]}" >/dev/null)
    fi
    for p in "$@"; do
        local deb
        deb=$(compgen -G "$dir/debs/${p}_*.deb" | head -n 1)
        if [ ! -f "$servers/.unpacked-$(basename "$deb")" ]; then
            dpkg -x "$deb" "$servers"
            touch "$servers/.unpacked-$(basename "$deb")"
        fi
    done
}

if [ ! -x "$servers/usr/bin/etcd" ] || [ ! -x "$servers/usr/bin/etcdctl" ]; then
    fetch_debs trixie etcd-server etcd-client
fi
if [ ! -x "$servers/usr/bin/consul" ]; then
    fetch_debs bullseye consul
fi
export SHIELD_ETCD_BIN="$servers/usr/bin/etcd"
export SHIELD_ETCDCTL_BIN="$servers/usr/bin/etcdctl"
export SHIELD_CONSUL_BIN="$servers/usr/bin/consul"
for b in "$SHIELD_ETCD_BIN" "$SHIELD_ETCDCTL_BIN" "$SHIELD_CONSUL_BIN"; do
    if [ ! -x "$b" ]; then
        say "expected $b after unpacking; the Debian package layout may have changed"
        exit 1
    fi
done
# ---- Patroni 4.1.5, for the mixed-cluster and takeover tests ----------------------------------
# A virtual environment from PyPI (the machine's own pip index), cached like the servers. Patroni
# refuses root, so the tests run it as the test user: the environment is built on Debian's own
# python3 (not one under /root) in a directory that user can read.
PATRONI_VERSION=4.1.5
if [ "$(id -u)" = 0 ]; then
    patroni_dir="${SHIELD_PATRONI_DIR:-/var/cache/shield/patroni-$PATRONI_VERSION}"
else
    patroni_dir="${SHIELD_PATRONI_DIR:-$SHIELD_CACHE/patroni-$PATRONI_VERSION}"
fi
if ! "$patroni_dir/bin/python" -c "import patroni.dcs.etcd3, patroni.dcs.consul, psycopg2" 2>/dev/null || ! "$patroni_dir/bin/patroni" --version 2>/dev/null | grep -qx "patroni $PATRONI_VERSION"; then
    say "installing Patroni $PATRONI_VERSION into $patroni_dir"
    py=/usr/bin/python3
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    rm -rf "$patroni_dir"
    mkdir -p "$(dirname "$patroni_dir")"
    "$py" -m venv "$patroni_dir"
    "$patroni_dir/bin/pip" install -q --disable-pip-version-check "patroni[etcd3,consul]==$PATRONI_VERSION" psycopg2-binary
    chmod -R a+rX "$patroni_dir"
fi
export SHIELD_PATRONI_BIN="$patroni_dir/bin/patroni"
export SHIELD_PATRONICTL_BIN="$patroni_dir/bin/patronictl"

say "etcd $("$SHIELD_ETCD_BIN" --version | awk '/etcd Version/ {print $3}'), consul $("$SHIELD_CONSUL_BIN" version | awk 'NR==1 {print $2}'), postgres $("$SHIELD_PG_BINDIR/postgres" --version | awk '{print $3}'), $("$SHIELD_PATRONI_BIN" --version), $(protoc --version)"
