#!/usr/bin/env bash
# What users of buildx do for an image of several platforms (docker/build-push-action with
# `platforms:`, `push: true` and a tag list): log in to ECR and Docker Hub, then one
# `docker buildx build --platform ... --push` that names every tag of both registries. No
# image is run or tested. The benchmark (bench/run.py) times this script as a whole process
# against `shipit ship --platform ...` on the same rendered build context and the same kind of
# registries.
#
# Inputs (environment), as bench/plain_pipeline.sh's, and:
#   DOCKER_HOST      an engine whose image store builds several platforms (containerd's);
#                    buildx's `docker` driver builds on it, so no builder is created
#   PLATFORMS        e.g. linux/amd64,linux/arm64
#   BUILDX_PLUGIN    the docker-buildx CLI plugin: the private DOCKER_CONFIG lists it in its
#                    cli-plugins folder, where the docker CLI looks for plugins
set -euo pipefail
# shellcheck source=bench/registry_logins.sh
source "$(dirname "${BASH_SOURCE[0]}")/registry_logins.sh"

require CONTEXT_DIR TAG PLATFORMS ECR_REGISTRY ECR_REPOSITORY HUB_REGISTRY HUB_REPOSITORY \
  DOCKERHUB_USERNAME DOCKERHUB_TOKEN PYTHON BUILDX_PLUGIN
trace_commands

private_docker_config
trap 'rm -rf "$DOCKER_CONFIG"' EXIT
mkdir "$DOCKER_CONFIG/cli-plugins"
ln -s "$BUILDX_PLUGIN" "$DOCKER_CONFIG/cli-plugins/docker-buildx"

# 1. log in to both registries
ecr_login
hub_login

# 2. build every platform and push the index under both tags to both registries
docker buildx build --platform "$PLATFORMS" --push \
  --tag "$ECR_REGISTRY/$ECR_REPOSITORY:$TAG" --tag "$ECR_REGISTRY/$ECR_REPOSITORY:latest" \
  --tag "$HUB_REGISTRY/$HUB_REPOSITORY:$TAG" --tag "$HUB_REGISTRY/$HUB_REPOSITORY:latest" \
  "$CONTEXT_DIR"
