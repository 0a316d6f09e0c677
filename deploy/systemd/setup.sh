#!/usr/bin/env bash
# Installs meshd as a systemd service on a standalone host.
#
#   sudo deploy/systemd/setup.sh [PATH_TO_MESHD_BINARY]
#
# Creates the meshd user and group with UID/GID 1337 (MESHD_UID overrides; the
# interception rules are written for the same UID), installs the binary to
# /usr/local/bin, the unit to /etc/systemd/system, and /etc/meshd/meshd.env if absent.
# The service is enabled, and started only once /etc/meshd/mesh.yaml exists.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-./meshd}"
uid="${MESHD_UID:-1337}"

die() { echo "setup.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$bin" ] || die "no meshd binary at $bin (build it: CGO_ENABLED=0 go build -trimpath -o meshd ./cmd/meshd)"
command -v iptables-restore >/dev/null || die "iptables is not installed (apt-get install iptables / dnf install iptables-nft)"
command -v systemctl >/dev/null || die "systemd is required"

# The user: an existing meshd user must already have the UID the rules exempt.
if id meshd >/dev/null 2>&1; then
  [ "$(id -u meshd)" = "$uid" ] || die "user meshd exists with UID $(id -u meshd), not $uid; set MESHD_UID=$(id -u meshd)"
else
  if getent passwd "$uid" >/dev/null; then
    die "UID $uid is taken by $(getent passwd "$uid" | cut -d: -f1); choose another with MESHD_UID"
  fi
  getent group meshd >/dev/null || groupadd --system --gid "$uid" meshd
  useradd --system --uid "$uid" --gid meshd --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin meshd
fi

install -m 0755 "$bin" /usr/local/bin/meshd
install -d -m 0755 /etc/meshd /usr/local/share/doc/meshd
if [ -f "$here/../../docs/interception.md" ]; then
  install -m 0644 "$here/../../docs/interception.md" /usr/local/share/doc/meshd/interception.md
fi
if [ ! -f /etc/meshd/meshd.env ]; then
  cat >/etc/meshd/meshd.env <<ENV
# Read by meshd.service. The names are App Mesh's; see docs/interception.md.
MESHD_NODE=
# Ports the application on this host listens on (inbound is redirected to meshd).
APPMESH_APP_PORTS=
APPMESH_IGNORE_UID=$uid
APPMESH_ENVOY_INGRESS_PORT=15000
APPMESH_ENVOY_EGRESS_PORT=15001
# Destinations reached directly, e.g. a database: APPMESH_EGRESS_IGNORED_IP=10.0.5.0/24
APPMESH_EGRESS_IGNORED_IP=
APPMESH_EGRESS_IGNORED_PORTS=
ENV
  chmod 0644 /etc/meshd/meshd.env
fi
install -m 0644 "$here/meshd.service" /etc/systemd/system/meshd.service
systemctl daemon-reload
systemctl enable meshd.service

if [ -f /etc/meshd/mesh.yaml ] && grep -q '^MESHD_NODE=.' /etc/meshd/meshd.env; then
  /usr/local/bin/meshd validate -c /etc/meshd/mesh.yaml
  systemctl restart meshd.service
  echo "meshd started; 'meshd iptables print' shows the rules it installed"
else
  echo "meshd installed and enabled. Next: put the mesh config in /etc/meshd/mesh.yaml,"
  echo "set MESHD_NODE and APPMESH_APP_PORTS in /etc/meshd/meshd.env, then: systemctl start meshd"
fi
