"""One module per ``protrnn`` sub-command: ``HELP``/``DESCRIPTION``, ``add_arguments(parser)``, ``run(args)``."""
