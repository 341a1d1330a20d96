#!/usr/bin/env bash
# Real-browser suite: Debian's headless Chromium, driven by puppeteer-core
# (pinned in tests/browser/package-lock.json), runs the Flowtask client flow
# through a real Gatehouse with TLS, once over HTTP/2 and once over HTTP/1.1,
# including forged requests from pages on other sites and "Sign in with
# Google" clicked through a real OpenID provider's login and consent pages.
# Installs what it needs (chromium, nodejs/npm, openssl, curl, aiosmtpd, the
# pinned npm packages of tests/browser and tests/oidc); idempotent; never
# skips.
# pages.test.mjs drives the built-in sign-in pages (issue 20) with and
# without JavaScript and checks them with axe-core (pinned npm package).
# pages-passkey.test.mjs clicks the pages' passkey button with the virtual
# authenticator under the pages' own CSP (issues 19/20).
# Screenshots and logs are kept under $BROWSER_ARTIFACTS (default: a
# directory under /tmp, printed by the suite).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
apt_install() {
    # Another process may hold the dpkg lock: retry for a while.
    for attempt in $(seq 1 30); do
        if $SUDO apt-get install -y --no-install-recommends "$@"; then return 0; fi
        echo "apt-get install busy or failed (attempt $attempt); retrying in 10 s" >&2
        sleep 10
        [ "$attempt" = 3 ] && { $SUDO apt-get update || true; }
    done
    return 1
}
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
# Chromium needs a font to render the screenshot's text.
fc-list 2>/dev/null | grep -qi . || need+=(fonts-liberation)
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update
    apt_install "${need[@]}"
fi
# The SMTP server: aiosmtpd for python3 on PATH (pip, as .ci/run does), or
# Debian's package for the system python when pip is not allowed.
export PYTHON_BIN=python3
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
    python3 -m pip install --quiet aiosmtpd==1.4.6 || true
    if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
        apt_install python3-aiosmtpd
        PYTHON_BIN=/usr/bin/python3
    fi
fi

cargo build --locked --bin gatehouse
(cd tests/browser && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
# The "Sign in with Google" steps use the certified OpenID provider of the
# OIDC tests (npm oidc-provider, pinned in tests/oidc/package-lock.json;
# it needs Node.js 20 or later).
(cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)

export GATEHOUSE_BIN="$PWD/target/debug/gatehouse"
export CHROMIUM_BIN=/usr/bin/chromium
export BROWSER_ARTIFACTS="${BROWSER_ARTIFACTS:-${TMPDIR:-/tmp}/gatehouse-browser-artifacts}"
cd tests/browser
timeout 600 node --test --test-concurrency=1 --test-reporter=spec *.test.mjs
