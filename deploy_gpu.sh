#!/usr/bin/env bash
# Deploy every function-gpu.yaml under the given paths (default: functions/) with nuctl.
# Options and their environment variables: --help.
# shellcheck source=deploy_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy_common.sh"
deploy_main function-gpu.yaml "$@"
