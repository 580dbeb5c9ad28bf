"""`editroute review`: people judge a run's outputs, and their decisions become measured quality. Owns the review
page (app.py: a FastAPI app, served alone or mounted by the serve command at /review; access.py: who may use it;
static/: the page's HTML, CSS and JS, no build step, nothing from the web), the run folder as the page sees it
(catalog.py: the ledger's review index filled from result.json, stand-in detection), thumbnails made once and
cached beside the outputs (thumbs.py), and the export (export.py: acceptance per backend and tier with Wilson
intervals, as a quality file a policy includes with `quality_file:`).

Decisions live in the ledger (`pipeline.ledger`, reviews.py). Below it: run, ledger, routing. It never imports
`pipeline.serve` (a sibling): the serve command mounts `create_review_app` itself. Names load on first use, so
FastAPI is imported only when the page is wanted."""

from backends.lazy_exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "app": ("create_review_app",),
        "catalog": ("STAND_IN_MARKER", "Catalog", "stand_in_reason", "write_stand_in_marker"),
        "export": ("INTERVAL", "Measured", "measure", "quality_document", "wilson", "write_quality_file"),
        "thumbs": ("THUMB_DIR", "thumbnail"),
    },
)
