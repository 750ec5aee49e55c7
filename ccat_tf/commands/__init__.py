"""One module per ``ccat-tf`` subcommand: ``HELP``, ``add_arguments(parser)``, ``run(args)``."""
