# shellcheck shell=bash
# Shared by deploy_cpu.sh and deploy_gpu.sh: stage each function with common/ and deploy it with nuctl.
# Usage (from the wrappers): deploy_main YAML_NAME [--dry-run] [PATH ...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="${CVAT_FUNCTIONS_PROJECT:-cvat}"
PLATFORM="${NUCLIO_PLATFORM:-local}"
NETWORK="${CVAT_FUNCTIONS_NETWORK:-cvat_cvat}"

run() {
  if [ "$DRY_RUN" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

stage() {  # stage FUNCTION_DIR -> prints the staged folder
  local dir="$1" staged
  staged="$(mktemp -d "${TMPDIR:-/tmp}/cvat-fn.XXXXXX")"
  cp -R "$dir/." "$staged/"
  cp -R "$ROOT/common" "$staged/common"
  find "$staged" -name __pycache__ -prune -exec rm -rf {} +
  echo "$staged"
}

deploy_main() {
  local yaml_name="$1"; shift
  DRY_RUN=0
  local paths=()
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      -h|--help) echo "usage: $(basename "$0") [--dry-run] [PATH ...]  (deploys every $yaml_name under PATH)"; return 0 ;;
      *) paths+=("$arg") ;;
    esac
  done
  [ ${#paths[@]} -gt 0 ] || paths=("$ROOT/functions")
  if [ "$DRY_RUN" = 0 ] && ! command -v nuctl >/dev/null 2>&1; then
    echo "nuctl not found: install Nuclio's CLI (https://github.com/nuclio/nuclio/releases)" >&2
    return 1
  fi
  run nuctl create project "$PROJECT" --platform "$PLATFORM" || true
  local yaml dir staged
  while IFS= read -r yaml; do
    dir="$(dirname "$yaml")"
    staged="$(stage "$dir")"
    echo "Deploying $dir ($yaml_name) from $staged" >&2
    local extra=()
    [ "$PLATFORM" = local ] && extra+=(--platform-config "{\"attributes\": {\"network\": \"$NETWORK\"}}")
    for var in CVAT_FUNCTIONS_REDIS_HOST CVAT_FUNCTIONS_REDIS_PORT CVAT_FUNCTIONS_REDIS_PASSWORD; do
      [ -n "${!var:-}" ] && extra+=(--env "$var=${!var}")
    done
    run nuctl deploy --project-name "$PROJECT" --path "$staged" --file "$staged/$yaml_name" \
      --platform "$PLATFORM" "${extra[@]}"
    [ "$DRY_RUN" = 1 ] && (cd "$staged" && find . -type f | sort | sed 's/^/  staged: /')
    rm -rf "$staged"
  done < <(find "${paths[@]}" -name "$yaml_name" -not -path '*/.venv/*' | sort)
  [ "$DRY_RUN" = 1 ] || run nuctl get function --platform "$PLATFORM"
}
