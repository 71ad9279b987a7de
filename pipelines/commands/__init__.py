"""One module per ``medgan`` sub-command: ``add_parser(subparsers)`` sets ``func``."""
