"""What `editroute serve` does differently from a batch run, as settings with the reasons for their defaults
(docs/server.md tells the same to users).

A batch run may wait out long rate limits and keep 4 calls in flight per API backend; a server answers clients who
wait, who retry on their own (the OpenAI SDK: 2 retries, honouring `retry-after` up to 120 s), and who arrive many
at once. The limits of a single request's size are in `wire.Limits`.
"""

from __future__ import annotations

from dataclasses import dataclass

# The OpenAI SDK's own retry timing (openai-python `_constants.py`): its read timeout, longest backoff, retries.
SDK_TIMEOUT_S = 600.0
SDK_MAX_BACKOFF_S = 8.0
SDK_MAX_RETRIES = 2


@dataclass(frozen=True)
class ServeSettings:
    # Calls in flight per API backend whose policy entry sets no `concurrency:`. A proxy's calls are mostly waiting
    # on the provider (an edit takes 10-60 s), so the limit that matters is the provider's rate limit, not ours:
    # 64 lets 64 clients' edits run at once (the SDK client's pool allows 1000); 4, the batch default, made 16
    # clients run at 0.31x the direct throughput. Said at start-up for every backend.
    api_concurrency: int = 64
    # Seconds one client request may sleep between upstream retries, in all. The provider's short waits (a burst's
    # `retry-after-ms` of a few hundred ms) are absorbed here; a longer one is not: the 429 goes to the client at
    # once with the provider's `retry-after`, because the client's SDK waits it out itself and would otherwise wait
    # twice, while the server held a connection, a job thread and a backend slot.
    max_retry_wait_s: float = 2.0
    # How long after a first try an SDK retry of it may still join its job (the cap; a retry that says its read
    # timeout, `x-stainless-read-timeout`, gets retries x (timeout + 8 s backoff + 1 s) plus its own upload time).
    # The default is the SDK's defaults: 2 retries x (600 s timeout + 8 s longest backoff) + slack.
    retry_window_s: float = SDK_MAX_RETRIES * (SDK_TIMEOUT_S + SDK_MAX_BACKOFF_S) + 4.0
    # JSON bodies: download `image_url` https references here (so local checks and self-hosted backends can use
    # them) instead of passing them to a provider that fetches URLs itself. Off by default: a server that fetches
    # what clients name can be made to reach the networks behind it.
    fetch_image_urls: bool = False
    fetch_private_hosts: bool = False  # with fetching on: also hosts on loopback / private / link-local addresses
    fetch_timeout_s: float = 10.0  # for the whole download
    # Threads that run jobs (each waits on its backend call); None: enough for every backend's calls in flight.
    job_threads: int | None = None

    def join_window_s(self, retry_count: int, read_timeout_s: float | None, upload_s: float) -> float:
        """How long ago a retry's first try may have arrived for the retry to join it."""
        if read_timeout_s is None or read_timeout_s <= 0:
            return self.retry_window_s
        return min(self.retry_window_s, retry_count * (read_timeout_s + SDK_MAX_BACKOFF_S + 1.0) + upload_s)
