#!/usr/bin/env bash
# Installs what `ray up` with the local provider needs on a Debian/Ubuntu machine: the SSH client
# and server and rsync (and python3.11-venv for the nodes' virtualenvs). Run as root.
# Package installs normally start the system sshd on port 22; this script prevents that (a
# temporary policy-rc.d), because the integration test runs its own sshd and must not leave one
# behind. Start the system service yourself on real nodes: `systemctl enable --now ssh`.
set -euo pipefail
packages=(openssh-client openssh-server rsync)
if ! /usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3.11-venv)
fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${packages[@]}" || { apt-get update -q && apt-get install -y -q "${packages[@]}"; }
