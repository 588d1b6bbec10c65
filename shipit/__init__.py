"""shipit: ship a static web site as a smoke-tested Nginx image to AWS ECR and Docker Hub."""

import os

# A smoke pass, the build id, the image's io.shipit.version label and a CI pin all name this
# version. Read from the file the build writes (pyproject.toml, tool.setuptools_scm), not from
# importlib.metadata, which costs `shipit --version` a scan of every installed distribution.
UNKNOWN_VERSION = "0.0+unknown"
# The name to install shipit by (PyPI's `shipit` is another project); the command is `shipit`.
DISTRIBUTION = "shipit-site"

try:
    import shipit._version as _version  # noqa: PLR0402 - mypy: a module, also when absent
except ImportError:  # a source tree that was never built or installed (PYTHONPATH=checkout)
    __version__ = UNKNOWN_VERSION
else:
    # Only this tree's own file counts: for a tree without one, an editable install of another
    # checkout answers `import shipit._version` with that checkout's.
    __version__ = (
        str(_version.__version__)
        if os.path.dirname(_version.__file__) == __path__[0]
        else UNKNOWN_VERSION
    )
