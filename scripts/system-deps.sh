#!/usr/bin/env bash
# System packages neo-ray needs (git; Node and npm for the JS/TS peer in tests and benchmarks;
# chromium for the dashboard's browser tests),
# from apt as root; a no-op when they are already there.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]} (install them with apt as root)" >&2
  fi
fi
