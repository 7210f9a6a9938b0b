"""One module per ``protrnn`` sub-command: ``DESCRIPTION``, ``add_arguments(parser)``, ``run(args)`` (its one-line summary
is in :data:`protrnn.cli.COMMANDS`)."""
