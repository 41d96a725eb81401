#!/usr/bin/env bash
# Deploy every function.yaml under the given paths (default: functions/) with nuctl.
# Environment: CVAT_FUNCTIONS_PROJECT (cvat), NUCLIO_PLATFORM (local), CVAT_FUNCTIONS_NETWORK (cvat_cvat).
# shellcheck source=deploy_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy_common.sh"
deploy_main function.yaml "$@"
