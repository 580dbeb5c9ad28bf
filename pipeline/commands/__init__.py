"""The `editroute` command line's subcommands, one module each (edit, plan, policy, run, report, batch, demo, serve,
bench, eval, doctor): each parses its flags, calls the wings below and prints for a person. `pipeline.cli` dispatches to
them by name and owns exit codes; heavy imports (torch, FastAPI, Ray) happen inside each command's function.

The exit codes are defined here, once: commands return them, `editroute --help` and `run --help` print
`EXIT_CODES_TEXT`, and the README repeats it (tests/test_exit_codes.py holds all three together)."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # everything asked for is done
    JOBS_FAILED = 1  # some jobs failed (now, or in an earlier run and not retried); the others ran
    BAD_INPUT = 2  # bad input or config, nothing run: usage, policy, --out, a manifest with no job that can run
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODES_TEXT = (
    "Exit codes: 0 all done, 1 some jobs failed (now, or earlier and not retried),\n"
    "2 bad input or config (nothing was run), 130 interrupted."
)

__all__ = ["EXIT_CODES_TEXT", "ExitCode"]
