"""Subcommands contributed by the rooms of attnscope.

Every module in this package that defines ``add_parser(subparsers, parser_class)`` registers its
subcommand(s) with the ``attnscope`` command line. Handlers import their heavy dependencies lazily, so
``attnscope --help`` stays fast. Shared helpers (``print_json``, ``table``) live in :mod:`attnscope.cli`.
"""
