"""Where the stored top-level help lives and the width it was rendered for: the console
script serves it (entry.py), the CLI renders it (cli.top_level_help)."""

import os

HELP_FILE = os.path.join(os.path.dirname(__file__), "help.txt")
HELP_WIDTH = 80
