#!/usr/bin/env bash
# Host configuration for the container tests: Podman's Docker-compatible service with runc,
# and a local registry (Debian's docker-registry) on 127.0.0.1:5000-5009 over plain HTTP.
# The packages come from scripts/setup's list (podman, runc, docker-registry, busybox-static,
# containernetworking-plugins); this script only writes configuration.
#
# Why each setting (checked on a Debian 12 machine with hybrid cgroups):
#  - runtime = "runc": crun, Podman's default, fails to create containers on hybrid cgroups.
#  - default_ulimits: Podman's default raises nofile/nproc above what the host allows, and
#    runc fails with "error setting rlimits ... operation not permitted" (root without
#    CAP_SYS_RESOURCE, as in a VM sandbox). The host's hard nofile fits; nproc above 32768
#    was refused even below the hard limit, so it is capped there.
#  - the registry ports are insecure (HTTP): the test fixture serves images on one of them
#    without TLS. Ten ports so that concurrent test runs each get one.
#
# Idempotent and cheap: files are rewritten only when their content would change. A running
# `podman system service` reads registries.conf when it starts: restart it after a change
# (the test fixture starts its own, so tests always see the current files).
# Runs as root, or as a user with sudo.
set -euo pipefail

say() { printf 'containers: %s\n' "$*"; }

if [[ $EUID -eq 0 ]]; then
  as_root() { "$@"; }
else
  as_root() { sudo "$@"; }
fi

# Writes stdin to $1 unless it already holds exactly that.
install_file() {
  local path=$1 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return 1
  fi
  as_root mkdir -p "$(dirname "$path")"
  as_root install -m 0644 "$tmp" "$path"
  rm -f "$tmp"
  say "wrote $path"
}

changed=0
conf=/etc/containers/containers.conf
marker="# Written by cairn scripts/containers.sh"
if [[ -f $conf ]] && ! grep -qF "$marker" "$conf"; then
  # Someone else's file: leave it, but say what it must contain.
  grep -q '^runtime *= *"runc"' "$conf" ||
    say "warning: $conf is not cairn's and does not set runtime = \"runc\"; container tests may fail"
else
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [[ $nofile == unlimited || $nofile -gt 1048576 ]] && nofile=1048576
  [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
  install_file "$conf" <<EOF && changed=1
$marker; rerun it after changing the host's limits.
[containers]
default_ulimits = [
  "nofile=$nofile:$nofile",
  "nproc=$nproc:$nproc",
]

[engine]
runtime = "runc"
EOF
fi

{
  echo "# Written by cairn scripts/containers.sh: the test fixtures' local registries (HTTP)."
  for port in 5000 5001 5002 5003 5004 5005 5006 5007 5008 5009; do
    printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n\n' "$port"
  done
} | install_file /etc/containers/registries.conf.d/50-cairn-test-registry.conf && changed=1

if ((changed)); then
  say "configuration updated; restart any running 'podman system service'"
else
  say "podman and registry configuration present"
fi
