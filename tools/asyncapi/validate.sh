#!/usr/bin/env bash
# The official AsyncAPI validator (`asyncapi validate`, npm package @asyncapi/cli, version
# pinned by package.json and package-lock.json beside this file) on docs/asyncapi.json.
# Fails on any error or warning. `make asyncapi-check` runs it; `make test` too.
#
# @asyncapi/cli is large (about 1.5 GB installed, minutes to install on 2 cores), so
# `npm ci` installs it once per package-lock.json into a cache outside the clone
# ($PERLINSOS_TOOLS_CACHE, default ~/.cache/perlinsos) and fresh clones reuse it.
# Without Node.js and npm it says plainly that it did not run; with
# ASYNCAPI_CHECK=required (CI sets it) that is an error.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
doc="$(cd "$here/../.." && pwd)/docs/asyncapi.json"
doc="${1:-$doc}"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  msg="official AsyncAPI validator NOT RUN: Node.js and npm are not installed"
  if [ "${ASYNCAPI_CHECK:-}" = "required" ]; then
    echo "asyncapi-check: $msg, and ASYNCAPI_CHECK=required: install Node.js 20+ and npm." >&2
    exit 1
  fi
  echo "asyncapi-check: $msg (docs/asyncapi.json is still checked by tests/test_asyncapi.py)." >&2
  exit 0
fi

lock_hash="$(sha256sum "$here/package-lock.json" | cut -c1-16)"
cache="${PERLINSOS_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/perlinsos}"
prefix="$cache/asyncapi-cli-$lock_hash"
if [ ! -x "$prefix/node_modules/.bin/asyncapi" ]; then
  echo "asyncapi-check: installing @asyncapi/cli with npm ci into $prefix (once)" >&2
  work="$prefix.tmp.$$"
  mkdir -p "$work"
  cp "$here/package.json" "$here/package-lock.json" "$work/"
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
  mv -T "$work" "$prefix" 2>/dev/null || rm -rf "$work"  # another run got there first
fi

# No usage analytics from CI: the CLI reads this file and sends nothing.
export CI=true ASYNCAPI_METRICS_CONFIG_PATH="$here/analytics-off.json"
exec "$prefix/node_modules/.bin/asyncapi" validate "$doc" --fail-severity warn
