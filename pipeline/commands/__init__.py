"""One module per `editroute` subcommand; see `pipeline.cli`."""
