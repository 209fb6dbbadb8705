#!/usr/bin/env bash
# Both downstream binaries run and report that hakmem served them.
set -euo pipefail
./service | grep -q "handled .* bytes of requests on "
./service_api | grep -q "large blocks live 1"
echo "1 passed, 0 failed"
