"""The `editroute` command line's subcommands, one module each (edit, plan, policy, run, report, demo, serve, bench,
eval, doctor): each parses its flags, calls the wings below and prints for a person. `pipeline.cli` dispatches to
them by name and owns exit codes; heavy imports (torch, FastAPI, Ray) happen inside each command's function."""
