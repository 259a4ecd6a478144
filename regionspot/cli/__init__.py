"""The ``regionspot`` command line (one module per subcommand)."""
