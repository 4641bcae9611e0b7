#!/usr/bin/env bash
# Prepares a Debian 12 machine for tsbackup's demo, tests and benchmarks: PostgreSQL 15 from Debian,
# and the real TimescaleDB extension built from Debian trixie's source package (Apache-only, the
# "+dfsg" tarball has the TSL code removed). Idempotent; run as root. Leaves the system's own
# PostgreSQL cluster alone: it never creates, starts or changes one.
set -euo pipefail

PG_MAJOR=15
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
SRC_LIST=/etc/apt/sources.list.d/tsbackup-trixie-src.sources
BUILD_ROOT="${TSBACKUP_BUILD_ROOT:-/var/cache/tsbackup-setup}"

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: must run as root (it installs Debian packages and the extension into PostgreSQL ${PG_MAJOR})." >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_update_once() {
  if [ "$apt_updated" -eq 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
}

# 1. Debian packages from bookworm only.
packages=(postgresql-${PG_MAJOR} postgresql-client-${PG_MAJOR} postgresql-server-dev-${PG_MAJOR}
          cmake gcc make dpkg-dev libssl-dev zstd libzstd-dev time locales)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_update_once
  # Installing the server package must not start or create a cluster of the system's own.
  if [ ! -e /etc/postgresql-common/createcluster.conf ] || ! grep -q '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
    mkdir -p /etc/postgresql-common
    touch /etc/postgresql-common/createcluster.conf
    grep -q '^create_main_cluster' /etc/postgresql-common/createcluster.conf \
      || echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. TimescaleDB from trixie's *source* package. Only a deb-src entry is added, so no binary package
#    of trixie can ever be installed and nothing of the base system is upgraded.
if [ ! -f "$SRC_LIST" ]; then
  log "adding a deb-src entry for trixie"
  cat > "$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_updated=0
fi
apt_update_once_if_needed() {
  if ! apt-cache showsrc timescaledb 2>/dev/null | grep -q '^Version:'; then
    apt_update_once
  fi
}
apt_update_once_if_needed
src_version=$(apt-cache showsrc timescaledb | awk '/^Version:/ {print $2}' | sort -V | tail -n 1)
if [ -z "$src_version" ]; then
  echo "setup: apt knows no source package 'timescaledb' for trixie; check $SRC_LIST and run apt-get update." >&2
  exit 1
fi
upstream=${src_version%%+*}   # 2.19.3+dfsg-1+deb13u1 -> 2.19.3
upstream=${upstream%%-*}
ext_dir=$("$PG_CONFIG" --sharedir)/extension
lib_dir=$("$PG_CONFIG" --pkglibdir)

if [ -f "$ext_dir/timescaledb--${upstream}.sql" ] && [ -f "$lib_dir/timescaledb-${upstream}.so" ] && [ -f "$lib_dir/timescaledb.so" ]; then
  log "TimescaleDB ${upstream} already installed for PostgreSQL ${PG_MAJOR}; skipping the build"
else
  log "building TimescaleDB ${upstream} (source ${src_version}) for PostgreSQL ${PG_MAJOR}"
  work="$BUILD_ROOT/$src_version"
  rm -rf "$work"; mkdir -p "$work"
  ( cd "$work" && apt-get source -qq --download-only "timescaledb=${src_version}" >/dev/null \
      && dpkg-source -x --no-check ./*.dsc src >/dev/null )
  (
    cd "$work/src"
    ./bootstrap -DPG_CONFIG="$PG_CONFIG" -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DLINTER=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cd build
    make -j"$(nproc)" >/dev/null
    make install >/dev/null
  )
  rm -rf "$work"
fi

# 3. moto (an S3-compatible server for the S3 tests, run with signature checking on) and boto3,
#    which the test harness uses to create moto's IAM user and key.
if ! command -v moto_server >/dev/null 2>&1 || ! python3 -c 'import boto3' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_update_once
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  log "installing moto[server] and boto3 with pip"
  python3 -m pip install -q 'moto[server]' boto3 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'moto[server]' boto3
fi

# 4. A translated locale, so tests can show that PostgreSQL's tools speak German under it and that
#    tsbackup still reads their messages in English (it runs them with LC_MESSAGES=C).
if ! locale -a 2>/dev/null | grep -qix 'de_DE\.utf-\?8'; then
  log "generating the de_DE.UTF-8 locale"
  localedef -i de_DE -f UTF-8 de_DE.UTF-8
fi

installed=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$ext_dir/timescaledb.control")
echo "TimescaleDB ${installed} is installed for PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}')"
