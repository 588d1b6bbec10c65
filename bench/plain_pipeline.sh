#!/usr/bin/env bash
# What users do today without shipit: build, run, poll with curl, log in, tag and push to ECR
# and Docker Hub, remove the container. The benchmark (bench/run.py, `python -m bench.run`) times this script as a
# whole process against `shipit ship` on the same rendered build context and registries.
#
# Inputs (environment):
#   CONTEXT_DIR      rendered build context (`shipit render --out DIR`: Dockerfile + shipit/)
#   IMAGE, TAG       local image name and the "sha" tag; `latest` is pushed as well
#   PORT             host port on 127.0.0.1 for the check
#   ECR_REGISTRY     registry host standing in for <account>.dkr.ecr.<region>.amazonaws.com
#   ECR_REPOSITORY   repository in it
#   HUB_REGISTRY     registry host standing in for Docker Hub
#   HUB_REPOSITORY   namespace/name in it
#   DOCKERHUB_USERNAME, DOCKERHUB_TOKEN
#   AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (moto here)
#   PYTHON           an interpreter with boto3 (stands in for the AWS CLI, not installed here)
#   CONTAINER        container name (default plain-pipeline-<pid>)
#   READY_TIMEOUT    seconds to wait for the site (default 30)
#   PLAIN_TRACE      optional file: every command with a timestamp (for a per-step breakdown)
#
# docker login writes credentials to $DOCKER_CONFIG/config.json: a private temporary one is
# used and deleted on exit, so the user's ~/.docker/config.json is never touched.
set -euo pipefail
# shellcheck source=bench/registry_logins.sh
source "$(dirname "${BASH_SOURCE[0]}")/registry_logins.sh"

require CONTEXT_DIR IMAGE TAG PORT ECR_REGISTRY ECR_REPOSITORY HUB_REGISTRY HUB_REPOSITORY \
  DOCKERHUB_USERNAME DOCKERHUB_TOKEN PYTHON
trace_commands
CONTAINER="${CONTAINER:-plain-pipeline-$$}"
READY_TIMEOUT="${READY_TIMEOUT:-30}"
# The legacy builder, which is also what docker-py (and so shipit) builds with.
export DOCKER_BUILDKIT=0

private_docker_config
cleanup() {
  docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  rm -rf "$DOCKER_CONFIG"
}
trap cleanup EXIT

# 1. build
docker build -t "$IMAGE:$TAG" -t "$IMAGE:latest" "$CONTEXT_DIR"

# 2. run, and poll until / answers (no fixed sleep)
docker run -d --name "$CONTAINER" -p "127.0.0.1:$PORT:8080" "$IMAGE:$TAG"
deadline=$((SECONDS + READY_TIMEOUT))
until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "plain_pipeline.sh: the site did not answer within $READY_TIMEOUT s" >&2
    docker logs --tail 20 "$CONTAINER" >&2 || true
    exit 1
  fi
  sleep 0.1
done

# 3. ECR
ecr_login
for tag in "$TAG" latest; do
  docker tag "$IMAGE:$TAG" "$ECR_REGISTRY/$ECR_REPOSITORY:$tag"
  docker push "$ECR_REGISTRY/$ECR_REPOSITORY:$tag"
done

# 4. Docker Hub
hub_login
for tag in "$TAG" latest; do
  docker tag "$IMAGE:$TAG" "$HUB_REGISTRY/$HUB_REPOSITORY:$tag"
  docker push "$HUB_REGISTRY/$HUB_REPOSITORY:$tag"
done

# 5. remove the container (the trap does it again harmlessly, and on any failure)
docker rm -f "$CONTAINER"
