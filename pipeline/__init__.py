"""Everything that decides and runs edit jobs, as a stack of wings; each imports only the ones below it:

    commands/ + cli.py                 the `editroute` command line
    eval/  serve/  cluster/  bench/    quality measurement, the OpenAI-compatible server, Ray, benchmarks
    run/                               one job exactly once; batches, executors, files, report
    ledger/                            the SQLite ledger: jobs, attempts, holds, spend
    routing/                           policy, rules, router, plan
    jobs.py  configfile.py  errors.py  the manifest, YAML loading with line-exact errors, ConfigError

Imports `backends`, never the reverse. Importing it is cheap: no torch, no diffusers. See docs/architecture.md."""
