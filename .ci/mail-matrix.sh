#!/usr/bin/env bash
# Black-box mail matrix against a real SMTP server (aiosmtpd): outages and
# gatehouse restarts around sign-ups, STARTTLS / implicit TLS with a CA file,
# AUTH, check-mail. Needs: python3 with aiosmtpd==1.4.6 and trustme (the CI
# entry point .ci/run installs them). Fails loudly; never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import aiosmtpd, trustme' || {
    echo "mail-matrix: python3 modules aiosmtpd and trustme are required" >&2
    exit 1
}
cargo build --locked --bin gatehouse
GATEHOUSE_BIN="$PWD/target/debug/gatehouse" timeout 150 python3 .ci/mail_matrix.py
