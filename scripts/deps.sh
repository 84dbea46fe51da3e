#!/usr/bin/env bash
# scripts/deps.sh: check, and where it can install, what `make test` needs
# besides Go. `make test` and .ci/run run it first.
#
#   redis-server 7+   the tests start private servers ($NUDGE_REDIS_SERVER, else PATH)
#   chromium          the console and devstack browser tests ($NUDGE_CHROMIUM, else
#                     chromium or chromium-browser on PATH)
#   gcc               cgo, which the race detector needs (go env CC)
#   kubectl or        renders the Kubernetes overlays in deploy/; optional
#   kustomize         without root (that test skips), required when CI=true
#
# As root on Debian or Ubuntu it installs what is missing (apt-get, and
# `go install` for kustomize, which Debian's kubectl is too old to replace);
# otherwise it stops at once, naming each missing tool with the command
# that installs it and the variable that points at one elsewhere.
#
# Exit status: 0 when everything needed is there, 1 otherwise.
set -uo pipefail

KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
GO=${GO:-go}
ci=${CI:-}
[ "$ci" = "1" ] && ci=true

say() { printf 'deps: %s\n' "$*"; }

redis_bin() { if [ -n "${NUDGE_REDIS_SERVER:-}" ]; then echo "$NUDGE_REDIS_SERVER"; else command -v redis-server; fi; }
redis_major() { "$1" --version 2>/dev/null | sed -n 's/.* v=\([0-9][0-9]*\)\..*/\1/p'; }
have_redis() {
	local b v
	b=$(redis_bin) || return 1
	[ -x "$b" ] || return 1
	v=$(redis_major "$b")
	[ -n "$v" ] && [ "$v" -ge 7 ]
}
have_chromium() {
	if [ -n "${NUDGE_CHROMIUM:-}" ]; then [ -x "$NUDGE_CHROMIUM" ]; return; fi
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}
cc_name() { "$GO" env CC 2>/dev/null || echo gcc; }
have_cc() { command -v "$(cc_name)" >/dev/null 2>&1; }
have_kube() { command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1; }

# sudo is the prefix of the install commands we print.
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo "

# check fills missing (apt package names) and notes (lines to print).
check() {
	missing=() notes=() kube_missing=""
	if ! have_redis; then
		missing+=(redis-server)
		local b; b=$(redis_bin)
		if [ -n "$b" ] && [ -x "$b" ]; then
			notes+=("redis-server: $b is version $(redis_major "$b"), 7 or newer is needed: ${sudo}apt-get install redis-server (Debian 12 has 7.0), or set NUDGE_REDIS_SERVER=/path/to/redis-server")
		else
			notes+=("redis-server 7+: not found${NUDGE_REDIS_SERVER:+ at NUDGE_REDIS_SERVER=$NUDGE_REDIS_SERVER}: ${sudo}apt-get install redis-server, or set NUDGE_REDIS_SERVER=/path/to/redis-server")
		fi
	fi
	if ! have_chromium; then
		missing+=(chromium)
		notes+=("chromium: not found${NUDGE_CHROMIUM:+ at NUDGE_CHROMIUM=$NUDGE_CHROMIUM}: ${sudo}apt-get install chromium, or set NUDGE_CHROMIUM=/path/to/chromium")
	fi
	if ! have_cc; then
		missing+=(gcc)
		notes+=("$(cc_name): not found (cgo, which go test -race needs): ${sudo}apt-get install gcc")
	fi
	if ! have_kube; then
		kube_missing=yes
		local need="optional, the overlay test skips without it"
		[ "$ci" = true ] && need="required when CI=true"
		notes+=("kubectl or kustomize: not found ($need; renders deploy/kubernetes/overlays): ${sudo}CGO_ENABLED=0 GOBIN=/usr/local/bin go install $KUSTOMIZE_MODULE (Debian's kubernetes-client is too old for the overlays)")
	fi
}

is_debian() { [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; }

check
if [ ${#missing[@]} -gt 0 ] || [ -n "$kube_missing" ]; then
	if [ "$(id -u)" = 0 ] && is_debian; then
		if [ ${#missing[@]} -gt 0 ]; then
			say "installing ${missing[*]} with apt-get (root on $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-Debian}"))"
			export DEBIAN_FRONTEND=noninteractive
			apt-get update -qq || { say "apt-get update failed"; exit 1; }
			apt-get install -y -qq "${missing[@]}" >/dev/null || { say "apt-get install ${missing[*]} failed"; exit 1; }
		fi
		if [ -n "$kube_missing" ]; then
			say "installing kustomize ($KUSTOMIZE_MODULE) into /usr/local/bin"
			CGO_ENABLED=0 GOBIN=/usr/local/bin GOFLAGS=-mod=mod "$GO" install "$KUSTOMIZE_MODULE" || { say "go install $KUSTOMIZE_MODULE failed"; exit 1; }
		fi
		hash -r
		check
	fi
fi

if [ ${#missing[@]} -gt 0 ] || { [ -n "$kube_missing" ] && [ "$ci" = true ]; }; then
	say "missing what the tests need:"
	for n in "${notes[@]}"; do printf '  - %s\n' "$n"; done
	if [ "$(id -u)" != 0 ]; then
		say "run as root (sudo make test, or sudo scripts/deps.sh) to install them with apt-get, or install them yourself"
	elif ! is_debian; then
		say "not Debian or Ubuntu: install them with your package manager"
	fi
	[ -n "$kube_missing" ] && [ "$ci" = true ] && say "CI=true: the Kubernetes overlay test must not skip, so kubectl or kustomize is required"
	exit 1
fi

if [ -n "$kube_missing" ]; then
	for n in "${notes[@]}"; do say "$n"; done
fi
say "ok: redis-server $(redis_major "$(redis_bin)"), chromium, $(cc_name)$( have_kube && printf ', %s' "$(command -v kubectl >/dev/null 2>&1 && echo kubectl || echo kustomize)")"
exit 0
