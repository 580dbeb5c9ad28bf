"""Everything that decides and runs edit jobs: manifests (`jobs`), policies (`policy`), the `router`,
the SQLite `ledger`, the batch `runner`, the OpenAI-compatible `server` and the `cli`.
Imports `backends`, never the reverse. Importing it is cheap: no torch, no diffusers."""
