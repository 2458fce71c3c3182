#!/usr/bin/env bash
# Make sure a MySQL-protocol server answers at TIDB_HOST:TIDB_PORT (default 127.0.0.1:3306).
# Where none does and the address is this machine, start a local MariaDB as the TiDB stand-in,
# installing Debian's mariadb-server first when it is missing and we are root. Else say how to point at one.
set -uo pipefail
host="${TIDB_HOST:-127.0.0.1}"
port="${TIDB_PORT:-3306}"
hint="point TIDB_HOST/TIDB_PORT/TIDB_USER/TIDB_PASSWORD at a TiDB (docker run -p 4000:4000 pingcap/tidb, or TiDB Cloud) or a MySQL 8/MariaDB server"

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if answers; then
  exit 0
fi
case "$host" in
  127.0.0.1|localhost|::1) ;;
  *) echo "error: no server answers at $host:$port — $hint" >&2; exit 1 ;;
esac
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no server answers at $host:$port and MariaDB is not installed (installing it needs root and apt-get) — $hint" >&2
    exit 1
  fi
  echo "installing mariadb-server (Debian package) as the local TiDB stand-in…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null) || {
    echo "error: could not install mariadb-server — $hint" >&2; exit 1; }
fi
echo "starting a local MariaDB on $host:$port as the TiDB stand-in…"
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null
if command -v start-stop-daemon >/dev/null 2>&1; then
  # --user: Debian's stock config leaves `user = mysql` commented out, and mariadbd refuses to run as root
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql --port="$port" >/dev/null 2>&1
else
  (/usr/sbin/mariadbd --user=mysql --port="$port" >/dev/null 2>&1 &)
fi
for _ in $(seq 1 60); do
  answers && break
  sleep 0.5
done
if ! answers; then
  echo "error: started MariaDB but nothing answers at $host:$port after 30 s — $hint" >&2
  exit 1
fi
# A fresh Debian install lets root in over the Unix socket only; the local default is root with an
# empty password over TCP, so allow that too on a server we started ourselves.
if [ "${TIDB_USER:-root}" = root ] && [ -z "${TIDB_PASSWORD:-}" ] && command -v mariadb >/dev/null 2>&1; then
  if ! mariadb -h "$host" -P "$port" -uroot -e "SELECT 1" >/dev/null 2>&1; then
    mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES" >/dev/null 2>&1 \
      || { echo "error: MariaDB runs but root cannot log in over TCP — $hint" >&2; exit 1; }
  fi
fi
echo "MariaDB answers at $host:$port"
