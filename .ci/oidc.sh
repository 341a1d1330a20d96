#!/usr/bin/env bash
# OpenID Connect sign-in against a real OpenID Provider on loopback:
# npm `oidc-provider` (certified, pinned in tests/oidc/package-lock.json)
# over TLS with a test CA, plus a small misbehaving provider for forged
# tokens (tests/oidc/fake-op.mjs). Installs Node.js if missing (apt),
# installs the pinned npm packages, then runs tests/oidc_flow.rs with
# GATEHOUSE_OIDC_TESTS=1, which makes a missing provider a failure.
# Idempotent; about 1 minute after the test build.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        if $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "$@"; then
            return 0
        fi
        echo "apt-get failed (dpkg lock busy?), retry $attempt" >&2
        sleep 10
    done
    return 1
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
# oidc-provider 9 and jose 6 need Node.js 20 or later (the machine's is 20).
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "oidc: Node.js $(node --version) is too old; oidc-provider 9 needs 20 or later" >&2
    exit 1
fi
(cd tests/oidc && npm ci --no-audit --no-fund)
GATEHOUSE_OIDC_TESTS=1 timeout 600 cargo test --locked --test oidc_flow -- --test-threads=1
