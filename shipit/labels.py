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
LABEL_CREATED = "org.opencontainers.image.created"
# Who made the image: "shipit" (its bytes follow from its input, so a registry that holds the
# same input holds the same digest) or "docker build" (which writes its own times and ids).
LABEL_BUILDER = "io.shipit.builder"
BUILT_BY_SHIPIT = "shipit"
BUILT_BY_DOCKER = "docker build"
