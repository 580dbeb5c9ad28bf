"""The review page: a FastAPI app over one run folder, served alone (`editroute review`) or mounted by
`editroute serve` at /review behind its keys.

    GET  /                              the page (static/index.html; CSS and JS from static/, nothing from the web)
    GET  /api/summary                   the run, the reviewer, stand-in warning, filter values, totals
    GET  /api/jobs?backend=&tag=&status=&decision=&tier=&after=SEQ|&before=SEQ&limit=
                                        one page of jobs (keyset: `after`/`before` are the seq cursors it returned)
    GET  /api/jobs/{id}                 one job in full: result.json's reasons, attempts and timings, the history
    GET  /api/jobs/{id}/thumb/{role}    input | mask | output thumbnail (made once, cached beside the outputs)
    GET  /api/jobs/{id}/full/{role}     the full-size file, only when a person opens the job
    POST /api/jobs/{id}/decision        {"decision": "accept"|"reject"|"skip", "note": "..."}
    GET  /api/quality.yaml              the quality file these decisions make (the same as `--export`)

Files served are only those the ledger records for that job (never a path from the request). With API keys (the
serve mount), a browser logs in once with a key and a name and gets an HttpOnly, SameSite=Strict session cookie;
scripts may send `Authorization: Bearer KEY` instead. Without keys the app answers loopback Host names only (a
DNS-rebinding page cannot reach it). Writes need a JSON body and a same-origin `Origin`, so no other site can
decide for the reviewer.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from pipeline.ledger import DECISIONS, UNDECIDED, ReviewFilter
from pipeline.review.access import COOKIE, Access, ReviewError, same_origin
from pipeline.review.catalog import Catalog
from pipeline.review.export import measure, quality_document
from pipeline.review.thumbs import ROLES, thumbnail

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"review.css": "text/css", "review.js": "text/javascript"}
PAGE_LIMIT = 60
MAX_LIMIT = 500
MAX_NOTE = 2000
ROLE_COLUMNS = {"input": "image_path", "mask": "mask_path", "output": "output_path"}
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def _usd(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def _public(item: dict[str, Any]) -> dict[str, Any]:
    """An index row as the page gets it (no file system paths: the page asks for files by job and role)."""
    version = (item.get("output_sha256") or "")[:12]
    return {
        "seq": item["seq"],
        "id": item["job_id"],
        "status": item["status"],
        "backend": item["backend"],
        "tier": item["tier"],
        "cost_usd": _usd(item["cost_usd"]),
        "latency_s": None if item["latency_ms"] is None else item["latency_ms"] / 1000,
        "prompt": item["prompt"],
        "tags": item["tags"],
        "error": item["error"],
        "decision": item["decision"],
        "has": {role: bool(item[column]) for role, column in ROLE_COLUMNS.items()},
        "version": version,
    }


def _totals(catalog: Catalog) -> dict[str, Any]:
    rows = catalog.totals()
    per = [
        {
            **{k: r[k] for k in ("backend", "jobs", "done", "judged", "accepted", "rejected", "skipped")},
            "cost_usd": _usd(r["cost_usd"]),
            "cost_per_accepted_usd": _usd(r["cost_per_accepted_usd"]),
            "acceptance": r["accepted"] / r["judged"] if r["judged"] else None,
        }
        for r in rows
    ]
    accepted = sum(r["accepted"] or 0 for r in rows)
    judged_cost = sum((r["judged_cost_usd"] for r in rows), Decimal(0))
    return {
        "accepted": accepted,
        "rejected": sum(r["rejected"] or 0 for r in rows),
        "skipped": sum(r["skipped"] or 0 for r in rows),
        "jobs": sum(r["jobs"] for r in rows),
        "cost_per_accepted_usd": _usd(judged_cost / accepted) if accepted else None,
        "backends": per,
    }


def create_review_app(
    out_dir: str | Path,
    *,
    reviewer: str | None = None,
    api_keys: Sequence[str] = (),
    catalog: Catalog | None = None,
) -> FastAPI:
    """The review page over the run in `out_dir`. `reviewer`: the name decisions are recorded under when no keys
    are configured (`editroute review --reviewer`); with `api_keys`, each browser logs in with a key and a name."""
    catalog = catalog or Catalog(out_dir)
    catalog.sync()
    access = Access(api_keys, reviewer or "reviewer")
    app = FastAPI(title="editroute review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.catalog = catalog

    @app.exception_handler(ReviewError)
    async def _error(_request: Request, err: ReviewError) -> Response:
        return JSONResponse({"error": err.message}, status_code=err.status)

    def who(request: Request) -> str:
        name = access.who(request)
        if name is None:
            raise ReviewError(401 if access.keyed else 403, "log in with an API key" if access.keyed else "forbidden")
        return name

    def item_or_404(job_id: str) -> dict[str, Any]:
        item = catalog.ledger.review_item(job_id)
        if item is None:
            raise ReviewError(404, f"no job {job_id!r} in this run")
        return item

    def source(item: dict[str, Any], role: str) -> Path:
        if role not in ROLES:
            raise ReviewError(404, f"no such image: {role} (one of {', '.join(ROLES)})")
        stored = item[ROLE_COLUMNS[role]]
        path = catalog.path(stored)
        if path is None or not path.is_file():
            raise ReviewError(404, f"job {item['job_id']!r} has no {role} image on disk")
        return path

    # ---- the page ---------------------------------------------------------------------------------------------

    @app.get("/")
    async def page(request: Request) -> Response:
        if access.who(request) is None:
            if not access.keyed:
                return HTMLResponse("forbidden: open the page on 127.0.0.1 or localhost", status_code=403)
            return HTMLResponse((STATIC / "login.html").read_text(encoding="utf-8"), status_code=401)
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers={"cache-control": "no-store"})

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise ReviewError(404, "not found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"cache-control": "no-cache"})

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        token = access.login(str(form.get("key") or ""), str(form.get("name") or ""))
        if token is None:
            return RedirectResponse("./?failed=1", status_code=303)
        response = RedirectResponse("./", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path=request.scope.get("root_path") or "/")
        return response

    # ---- the API ----------------------------------------------------------------------------------------------

    @app.get("/api/summary")
    async def summary(request: Request) -> Response:
        name = who(request)
        await run_in_threadpool(catalog.refresh)

        def build() -> dict[str, Any]:
            return {
                "run": str(catalog.out_dir),
                "reviewer": name,
                "stand_ins": catalog.stand_ins,
                "facets": catalog.facets(),
                "totals": _totals(catalog),
                "decisions": list(DECISIONS),
            }

        return JSONResponse(await run_in_threadpool(build))

    @app.get("/api/jobs")
    async def jobs(request: Request) -> Response:
        who(request)
        q = request.query_params
        decision = q.get("decision") or None
        if decision is not None and decision not in (*DECISIONS, UNDECIDED):
            raise ReviewError(400, f"decision: expected one of {', '.join((*DECISIONS, UNDECIDED))}")
        where = ReviewFilter(
            backend=q.get("backend") or None,
            tag=q.get("tag") or None,
            status=q.get("status") or None,
            decision=decision,
            tier=q.get("tier") or None,
        )
        try:
            limit = min(MAX_LIMIT, max(1, int(q.get("limit") or PAGE_LIMIT)))
            after = int(q["after"]) if q.get("after") else None
            before = int(q["before"]) if q.get("before") else None
        except ValueError:
            raise ReviewError(400, "limit, after and before are integers") from None

        def page_of() -> dict[str, Any]:
            first = after is None and before is None
            if first:
                catalog.refresh()
            driver = catalog.driver(where)
            rows = catalog.ledger.review_page(where, after=after, before=before, limit=limit + 1, driver=driver)
            more = len(rows) > limit
            if before is not None:
                rows = rows[-limit:] if more else rows
            else:
                rows = rows[:limit]
            first, last = (rows[0]["seq"], rows[-1]["seq"]) if rows else (None, None)
            return {
                "items": [_public(r) for r in rows],
                # cursors: the page after this one / before it (None: there is none)
                "next": last if rows and (more or before is not None) else None,
                "prev": first if rows and (after is not None or (before is not None and more)) else None,
                # how many match: counted on the first page only (the page keeps it while paging)
                "matching": catalog.ledger.review_count(where, driver) if first else None,
            }

        return JSONResponse(await run_in_threadpool(page_of))

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: str, request: Request) -> Response:
        who(request)

        def detail() -> dict[str, Any]:
            item = item_or_404(job_id)
            data = catalog.result(job_id) or {}
            return {
                **_public(item),
                "model": data.get("model"),
                "reasons": data.get("reasons") or [],
                "attempts": data.get("attempts") or [],
                "timings": data.get("timings") or {},
                "size": data.get("size"),
                "finished_at": data.get("finished_at"),
                "history": [r.as_dict() for r in catalog.ledger.review_history(job_id)],
            }

        return JSONResponse(await run_in_threadpool(detail))

    @app.get("/api/jobs/{job_id}/thumb/{role}")
    async def thumb(job_id: str, role: str, request: Request) -> Response:
        who(request)

        def make() -> Path:
            item = item_or_404(job_id)
            src = source(item, role)
            try:
                return thumbnail(catalog.job_dir(job_id), role, src)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise ReviewError(404, f"job {job_id!r}: cannot read its {role} image ({exc})") from None

        path = await run_in_threadpool(make)
        return FileResponse(path, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    @app.get("/api/jobs/{job_id}/full/{role}")
    async def full(job_id: str, role: str, request: Request) -> Response:
        who(request)

        def read() -> tuple[bytes, str]:
            item = item_or_404(job_id)
            data = source(item, role).read_bytes()
            try:
                with Image.open(io.BytesIO(data)) as img:
                    kind = IMAGE_TYPES.get(img.format or "")
            except (OSError, Image.DecompressionBombError):
                kind = None
            if kind is None:
                raise ReviewError(415, f"job {job_id!r}: its {role} file is not an image the page can show")
            return data, kind

        data, kind = await run_in_threadpool(read)
        return Response(data, media_type=kind, headers={"cache-control": "private, max-age=3600"})

    @app.post("/api/jobs/{job_id}/decision")
    async def decide(job_id: str, request: Request) -> Response:
        name = who(request)
        same_origin(request)
        try:
            body = await request.json()
        except ValueError:
            raise ReviewError(400, "expected a JSON body: {decision, note}") from None
        decision = body.get("decision") if isinstance(body, dict) else None
        note = body.get("note") if isinstance(body, dict) else None
        if decision not in DECISIONS:
            raise ReviewError(400, f"decision: expected one of {', '.join(DECISIONS)}")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise ReviewError(400, f"note: text of at most {MAX_NOTE} characters")

        def record() -> dict[str, Any]:
            item_or_404(job_id)
            try:
                review = catalog.ledger.record_review(job_id, name, decision, note)
            except ValueError as exc:
                raise ReviewError(409, str(exc)) from None
            return {
                "review": review.as_dict(),
                "item": _public(item_or_404(job_id)),
                "totals": _totals(catalog),
            }

        return JSONResponse(await run_in_threadpool(record))

    @app.get("/api/quality.yaml")
    async def quality(request: Request) -> Response:
        who(request)

        def text() -> str:
            import yaml

            head, doc = quality_document(
                measure(catalog.ledger),
                run=catalog.out_dir,
                reviewers=catalog.ledger.reviewers(),
                stand_ins=catalog.stand_ins,
            )
            return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)

        return Response(
            await run_in_threadpool(text),
            media_type="application/yaml",
            headers={"content-disposition": 'attachment; filename="quality.yaml"'},
        )

    return app
