"""shipit: ship a static web site as a smoke-tested Nginx image to AWS ECR and Docker Hub."""

# A smoke pass, the build id, the image's io.shipit.version label and a CI pin all name this
# version. Read from the file the build writes (pyproject.toml, tool.setuptools_scm), not from
# importlib.metadata, which costs `shipit --version` a scan of every installed distribution.
UNKNOWN_VERSION = "0.0+unknown"
# The name to install shipit by (PyPI's `shipit` is another project); the command is `shipit`.
DISTRIBUTION = "shipit-site"

try:
    from shipit._version import __version__ as __version__
except ImportError:  # a source tree that was never built or installed (PYTHONPATH=checkout)
    __version__ = UNKNOWN_VERSION
