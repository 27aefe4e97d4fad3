#!/usr/bin/env bash
# Install the Debian packages noodle needs, skipping those already present.
# Idempotent: a second run installs nothing and does not touch the network.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libsqlite3-dev libpq-dev postgresql
  libfiu-dev fiu-utils libcmocka-dev libyaml-dev libjansson-dev
  gcovr libaprutil1-dev pgbouncer iproute2 procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's postgresql package starts a cluster on 5432; the tests start their own
# throwaway servers and do not need it.
echo "setup: installed ${#missing[@]} packages"
