"""Labels shipit puts on the images and containers it makes, and reads back."""

LABEL_CONTEXT_DIGEST = "io.shipit.context-digest"
LABEL_BUILD_ID = "io.shipit.build-id"
LABEL_BASE_IMAGE_ID = "io.shipit.base-image-id"
LABEL_MANAGED = "io.shipit.managed"
LABEL_IMAGE = "io.shipit.image"
LABEL_URL = "io.shipit.url"
LABEL_TITLE = "org.opencontainers.image.title"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_BASE_NAME = "org.opencontainers.image.base.name"
# The base image's manifest (of this platform) in its registry, when the build read it there:
# the push copies the base layers from there.
LABEL_BASE_DIGEST = "org.opencontainers.image.base.digest"
LABEL_CREATED = "org.opencontainers.image.created"
# Who made the image: "shipit" (its bytes follow from its input, so a registry that holds the
# same input holds the same digest) or "docker build" (which writes its own times and ids).
LABEL_BUILDER = "io.shipit.builder"
BUILT_BY_SHIPIT = "shipit"
BUILT_BY_DOCKER = "docker build"
