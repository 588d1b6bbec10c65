# Sourced by bench/plain_pipeline.sh and bench/buildx_pipeline.sh: what both scripts do
# around their builds, as their users do it.
#
#   require NAME...      stop (exit 2) when one of these variables is not set
#   trace_commands       with PLAIN_TRACE set, every command from here on goes there with an
#                        $EPOCHREALTIME stamp (the bench's per-step table; no token appears)
#   private_docker_config
#                        a temporary DOCKER_CONFIG, deleted at exit: `docker login` writes
#                        credentials there, never to the user's ~/.docker/config.json
#   ecr_login            `aws ecr get-login-password | docker login --username AWS
#                        --password-stdin $ECR_REGISTRY` (the AWS CLI is not installed here;
#                        $PYTHON's boto3 makes the same GetAuthorizationToken call)
#   hub_login            `docker login` to $HUB_REGISTRY with $DOCKERHUB_USERNAME and
#                        $DOCKERHUB_TOKEN

require() {
  local name
  for name in "$@"; do
    if [ -z "${!name:-}" ]; then echo "${0##*/}: $name is not set" >&2; exit 2; fi
  done
}

trace_commands() {
  [ -n "${PLAIN_TRACE:-}" ] || return 0
  exec {trace_fd}>"$PLAIN_TRACE"
  BASH_XTRACEFD=$trace_fd
  PS4='+ $EPOCHREALTIME '
  set -x
}

private_docker_config() {
  DOCKER_CONFIG="$(mktemp -d "${TMPDIR:-/tmp}/plain-pipeline-docker-config.XXXXXX")"
  export DOCKER_CONFIG
}

ecr_login() {
  "$PYTHON" -c '
import base64, boto3
data = boto3.client("ecr").get_authorization_token()["authorizationData"][0]
print(base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1])
' | docker login --username AWS --password-stdin "$ECR_REGISTRY"
}

hub_login() {
  docker login --username "$DOCKERHUB_USERNAME" --password-stdin "$HUB_REGISTRY" <<<"$DOCKERHUB_TOKEN"
}
