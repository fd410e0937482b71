"""The ``clipcrop`` command: one module per subcommand, argument checks without torch."""
