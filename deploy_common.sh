# shellcheck shell=bash
# Shared by deploy_cpu.sh and deploy_gpu.sh: stage each function with common/ and deploy it with nuctl.
# Usage (from the wrappers): deploy_main YAML_NAME [OPTIONS] [PATH ...]; see usage() for the options.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTED_NUCLIO_VERSION="1.13"  # the Nuclio release line CVAT's serverless compose file uses

usage() {
  cat <<EOF
usage: $(basename "$0") [OPTIONS] [PATH ...]

Deploys every $YAML_NAME under the PATHs (default: functions/) with nuctl. Each function folder is staged
together with common/ into a build context, so the image imports common/ exactly as tools/fn does.

Options (each also read from the environment variable in brackets):
  --project NAME        Nuclio project                          [CVAT_FUNCTIONS_PROJECT, default cvat]
  --platform NAME       local (Docker) or kube (Kubernetes)     [NUCLIO_PLATFORM, default local]
  --network NAME        Docker network, local platform only     [CVAT_FUNCTIONS_NETWORK, default cvat_cvat]
  --namespace NAME      Kubernetes namespace, kube only         [NUCLIO_NAMESPACE, default nuclio]
  --registry URL        registry images are pushed to, kube     [NUCLIO_REGISTRY, required for kube]
  --run-registry URL    registry the cluster pulls from, kube   [NUCLIO_RUN_REGISTRY, default: --registry]
  --stage-to DIR        keep the staged build contexts in DIR/<function name>  [DEPLOY_STAGE_DIR]
  --labels VOCABULARY   text-prompted detectors (open_vocabulary) list these labels instead of their spec's:
                        names (car,person) or a JSON/YAML file of names with prompts (needs python3)
                        [DEPLOY_LABELS]
  --dry-run             print every command and each staged context's files; run nothing  [DEPLOY_DRY_RUN=1]
  --check               run tools/doctor.py first (Docker, nuctl, and the GPU for deploy_gpu.sh; stop on a
                        problem) and after deploying (each function listed by the dashboard at
                        NUCLIO_DASHBOARD_URL, default http://localhost:8070, with CVAT's annotations)
                        [DEPLOY_CHECK=1]
  -h, --help            this text

The CVAT_FUNCTIONS_REDIS_* variables (one server, a cluster or a Sentinel set; see the README) and the
LABEL_STUDIO_* variables (the Label Studio door) are passed to the functions when set.
Re-running is safe: the project is created only when missing and nuctl deploy updates existing functions.
EOF
}

run() {  # run CMD...: print it in a dry run, run it otherwise
  if [ "$DRY_RUN" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

yaml_name_of() {  # the function's metadata.name, read without a YAML library
  awk '/^metadata:/ {m = 1; next} /^[^ #]/ {m = 0} m && /^  name:/ {gsub(/["'\'']/, "", $2); print $2; exit}' "$1"
}

check_tools() {
  if ! command -v nuctl >/dev/null 2>&1; then
    [ "$DRY_RUN" = 1 ] && { echo "note: nuctl not found (a real run needs it)" >&2; return 0; }
    die "nuctl not found: install Nuclio's CLI $TESTED_NUCLIO_VERSION.x (https://github.com/nuclio/nuclio/releases)"
  fi
  local version
  version="$(nuctl version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 || true)"
  echo "nuctl ${version:-(unknown version)}; this project is tested with Nuclio $TESTED_NUCLIO_VERSION.x" >&2
  case "$version" in
    "$TESTED_NUCLIO_VERSION".*) ;;
    *) echo "warning: nuctl ${version:-?} is not $TESTED_NUCLIO_VERSION.x; function.yaml fields may be read differently" >&2 ;;
  esac
  if [ "$PLATFORM" = local ] && [ "$DRY_RUN" = 0 ]; then
    command -v docker >/dev/null 2>&1 || die "docker not found: the local platform builds and runs functions with Docker"
    docker info >/dev/null 2>&1 || die "Docker is not running or not reachable by this user (docker info failed)"
  fi
}

stage() {  # stage FUNCTION_DIR NAME -> prints the staged folder: the function's files plus common/
  local dir="$1" name="$2" staged
  if [ -n "$STAGE_TO" ]; then
    staged="$STAGE_TO/$name"
    rm -rf "$staged" && mkdir -p "$staged"
  else  # inside this run's temporary folder, removed when the script exits
    staged="$STAGE_TEMP/$name"
    mkdir -p "$staged"
  fi
  cp -R "$dir/." "$staged/"
  rm -rf "$staged/common" && cp -R "$ROOT/common" "$staged/common"
  cp "$ROOT/requirements.lock" "$staged/requirements.lock"  # the builds' pip installs take it as constraints
  find "$staged" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
  echo "$staged"
}

ensure_project() {
  if [ "$DRY_RUN" = 0 ] && nuctl get project "$PROJECT" "${NUCTL_TARGET[@]}" >/dev/null 2>&1; then
    echo "project $PROJECT exists" >&2
  else
    run nuctl create project "$PROJECT" "${NUCTL_TARGET[@]}"
  fi
}

function_port() {  # the HTTP port nuctl reports for a deployed function, or -
  local name="$1"
  nuctl get function "$name" "${NUCTL_TARGET[@]}" -o json 2>/dev/null \
    | grep -Eo '"httpPort": *[0-9]+' | grep -Eo '[0-9]+$' | head -n 1 || echo "-"
}

deploy_main() {
  YAML_NAME="$1"; shift
  DRY_RUN="${DEPLOY_DRY_RUN:-0}"
  PROJECT="${CVAT_FUNCTIONS_PROJECT:-cvat}"
  PLATFORM="${NUCLIO_PLATFORM:-local}"
  NETWORK="${CVAT_FUNCTIONS_NETWORK:-cvat_cvat}"
  NAMESPACE="${NUCLIO_NAMESPACE:-nuclio}"
  REGISTRY="${NUCLIO_REGISTRY:-}"
  RUN_REGISTRY="${NUCLIO_RUN_REGISTRY:-}"
  STAGE_TO="${DEPLOY_STAGE_DIR:-}"
  LABELS="${DEPLOY_LABELS:-}"
  CHECK="${DEPLOY_CHECK:-0}"
  STAGE_TEMP=""
  local paths=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --check) CHECK=1 ;;
      --project|--platform|--network|--namespace|--registry|--run-registry|--stage-to|--labels)
        [ $# -ge 2 ] || die "$1 needs a value"
        case "$1" in
          --project) PROJECT="$2" ;; --platform) PLATFORM="$2" ;; --network) NETWORK="$2" ;;
          --namespace) NAMESPACE="$2" ;; --registry) REGISTRY="$2" ;; --run-registry) RUN_REGISTRY="$2" ;;
          --stage-to) STAGE_TO="$2" ;; --labels) LABELS="$2" ;;
        esac
        shift ;;
      -h|--help) usage; return 0 ;;
      -*) die "unknown option $1 (see --help)" ;;
      *) paths+=("$1") ;;
    esac
    shift
  done
  [ ${#paths[@]} -gt 0 ] || paths=("$ROOT/functions")
  case "$PLATFORM" in
    local) NUCTL_TARGET=(--platform local) ;;
    kube)
      [ -n "$REGISTRY" ] || die "the kube platform needs --registry (or NUCLIO_REGISTRY)"
      NUCTL_TARGET=(--platform kube --namespace "$NAMESPACE") ;;
    *) die "unknown platform $PLATFORM: use local or kube" ;;
  esac
  if [ -n "$STAGE_TO" ]; then
    mkdir -p "$STAGE_TO" && STAGE_TO="$(cd "$STAGE_TO" && pwd)"
  else  # made here, not in stage(): stage runs in a subshell, whose variables the exit trap never sees
    STAGE_TEMP="$(mktemp -d "${TMPDIR:-/tmp}/cvat-fn.XXXXXX")"
    trap 'rm -rf "$STAGE_TEMP"' EXIT
  fi

  if [ "$CHECK" = 1 ]; then
    local gpu=()
    [ "$YAML_NAME" = function-gpu.yaml ] && gpu=(--gpu)
    python3 "$ROOT/tools/doctor.py" --platform "$PLATFORM" "${gpu[@]}" \
      || die "tools/doctor.py found problems (above); fix them, or deploy without --check"
  fi
  check_tools
  local folders=() dir
  while IFS= read -r dir; do folders+=("$dir"); done < <(
    find "${paths[@]}" \( -name .venv -o -name .git \) -prune -o \
      \( -name function.yaml -o -name function-gpu.yaml \) -printf '%h\n' | sort -u)
  [ ${#folders[@]} -gt 0 ] || die "no function folders under ${paths[*]}"

  ensure_project
  local summary=() deployed=() failed=0 name staged extra var state port
  for dir in "${folders[@]}"; do
    if [ ! -f "$dir/$YAML_NAME" ]; then
      echo "skipped: $dir has no $YAML_NAME" >&2
      name="$(yaml_name_of "$dir/function.yaml" 2>/dev/null || true)"
      summary+=("${name:-${dir#"$ROOT"/}}|skipped (no $YAML_NAME)|-")
      continue
    fi
    name="$(yaml_name_of "$dir/$YAML_NAME")"
    [ -n "$name" ] || { echo "skipped: $dir/$YAML_NAME has no metadata.name" >&2; summary+=("$dir|skipped (no name)|-"); continue; }
    staged="$(stage "$dir" "$name")"
    if [ -n "$LABELS" ] && grep -Eq '^[[:space:]]+open_vocabulary:[[:space:]]*"?true"?[[:space:]]*$' "$staged/$YAML_NAME"; then
      python3 "$ROOT/common/core/vocabulary.py" "$LABELS" "$staged/$YAML_NAME" \
        || { summary+=("$name|FAILED (--labels)|-"); failed=$((failed + 1)); continue; }
      echo "$name lists the labels of $LABELS" >&2
    fi
    echo "deploying $name from $dir ($YAML_NAME), staged in $staged" >&2
    extra=()
    if [ "$PLATFORM" = local ]; then
      extra+=(--platform-config "{\"attributes\": {\"network\": \"$NETWORK\"}}")
    else
      extra+=(--registry "$REGISTRY" --run-registry "${RUN_REGISTRY:-$REGISTRY}")
    fi
    if [ -z "${CVAT_FUNCTIONS_REDIS_HOST:-}${CVAT_FUNCTIONS_REDIS_CLUSTER:-}${CVAT_FUNCTIONS_REDIS_SENTINELS:-}" ] \
        && grep -Eq '^[[:space:]]+type:[[:space:]]*tracker[[:space:]]*$' "$dir/$YAML_NAME"; then
      echo "warning: $name is a tracker and CVAT_FUNCTIONS_REDIS_HOST is not set: its states will live in each" \
        "worker's memory, which works only with one worker and one replica (see the README's Trackers section)" >&2
    fi
    extra+=(--env "FUNCTION_YAML=$YAML_NAME")  # the model reads the yaml it is deployed from
    for var in $(compgen -e | grep -E '^(CVAT_FUNCTIONS_REDIS|LABEL_STUDIO)_' | sort); do
      if [ -n "${!var:-}" ]; then extra+=(--env "$var=${!var}"); fi
    done
    if run nuctl deploy "$name" --project-name "$PROJECT" --path "$staged" --file "$staged/$YAML_NAME" \
        "${NUCTL_TARGET[@]}" "${extra[@]}"; then
      if [ "$DRY_RUN" = 1 ]; then
        state="dry run"; port="-"
        (cd "$staged" && find . -type f | sort | sed 's/^/  staged: /')
      else
        state="deployed"; port="$(function_port "$name")"; deployed+=(--function "$name")
      fi
    else
      state="FAILED"; port="-"; failed=$((failed + 1))
    fi
    summary+=("$name|$state|$port")
  done

  echo
  local row
  for row in "FUNCTION|STATE|PORT" "${summary[@]}"; do
    IFS='|' read -r name state port <<<"$row"
    printf '%-36s %-28s %s\n' "$name" "$state" "$port"
  done
  [ "$failed" = 0 ] || { echo "$failed function(s) failed to deploy; see nuctl's output above" >&2; return 1; }
  if [ "$CHECK" = 1 ] && [ ${#deployed[@]} -gt 0 ]; then
    python3 "$ROOT/tools/doctor.py" --functions-only --dashboard "${NUCLIO_DASHBOARD_URL:-http://localhost:8070}" \
      "${deployed[@]}" || return 1
  fi
}
