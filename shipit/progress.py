"""How the stages report progress: a callable that takes one line (the CLI prints it on
stderr), and one for per-layer push progress bars."""

from collections.abc import Callable

Progress = Callable[[str], None]
# (layer, status, bytes done, bytes in all): per-layer push progress for a progress bar.
LayerProgress = Callable[[str, str, int, int], None]


def quiet(_: str) -> None:
    """Progress nobody reads."""
