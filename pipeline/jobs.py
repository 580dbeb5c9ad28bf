"""Jobs: one edit to run, as a manifest entry or an HTTP request becomes it; and the manifest loader.

A manifest is JSONL (one JSON object a line; blank lines and `#` lines skipped), or YAML / JSON (a list, or
`{jobs: [...]}`). Each entry: `id`, `image` or `images` (paths relative to the manifest), `mask`, `markup`,
`prompt`, options (size, quality, n, output_format, output_compression, background, input_fidelity, complexity,
moderation, safety_identifier, frame_count, frame_duration_ms, user, seed), `tags`, an optional `backend` pin, and
an optional `deadline` (`24h`, `2d`, or an ISO timestamp: how long the job can wait; `pipeline.deadlines`).
An image, mask or markup may instead be a remote reference the provider fetches: `{file_id: file-abc}` or an
`https://` URL (only backends that take remote references run such a job).

Loading streams, in two passes, so a 100,000-job JSONL manifest never sits in memory:

    manifest = Manifest("jobs.jsonl")
    problems = manifest.check()     # pass 1: every problem at once (line numbers), nothing runs
    for job in manifest.jobs():     # pass 2: the valid jobs, one at a time; bad entries are skipped
        ...

Images are probed from their headers only (`InputImage.from_path`), never read whole.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import EditRequest
from backends.errors import InvalidRequest
from backends.images import InputImage
from backends.validation import request_problems
from pipeline.deadlines import Deadline, parse_deadline
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Job:
    id: str
    request: EditRequest  # images probed (format, size) but not read; request.job_id == id
    tags: tuple[str, ...] = ()
    backend: str | None = None  # pinned by the manifest entry, bypassing the objective (not capabilities)
    line: int | None = None  # where it came from in the manifest, for error messages
    deadline: Deadline | None = None  # how long it can wait (None: urgent, never sent to a batch lane)


@dataclass(frozen=True)
class ManifestProblem:
    file: str
    index: int  # entry number, from 0
    line: int | None
    job_id: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}: entry {self.index + 1}"
        job = f" job {self.job_id!r}:" if self.job_id is not None else ""
        return f"{where}:{job} {self.message}"


_STR_FIELDS = (
    "size",
    "quality",
    "output_format",
    "background",
    "input_fidelity",
    "complexity",
    "moderation",
    "safety_identifier",
    "user",
)
_INT_FIELDS = ("n", "output_compression", "frame_count", "frame_duration_ms", "seed")
FIELDS = (
    "id",
    "image",
    "images",
    "mask",
    "markup",
    "prompt",
    "tags",
    "backend",
    "deadline",
    *_STR_FIELDS,
    *_INT_FIELDS,
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PROBE_CACHE_MAX = 4096  # variants of one image share probes; bounded so a huge manifest stays small


class _EntryError(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _probe(path: Any, base: Path, field: str, cache: dict[Path, InputImage | InvalidRequest]) -> InputImage:
    if isinstance(path, dict) or (isinstance(path, str) and path.lower().startswith(("https://", "http://"))):
        return _remote(path, field)
    if not isinstance(path, str) or not path.strip():
        raise _EntryError(field, f"{field}: expected a file path, an https URL or {{file_id: ...}} (got {path!r})")
    full = Path(path).expanduser()
    full = full if full.is_absolute() else base / full
    hit = cache.get(full)
    if hit is None:
        try:
            hit = InputImage.from_path(full, field=field)
        except InvalidRequest as exc:
            hit = exc
        if len(cache) >= _PROBE_CACHE_MAX:
            cache.clear()
        cache[full] = hit
    if isinstance(hit, InvalidRequest):
        raise _EntryError(field, hit.message.replace(hit.field or field, field, 1))
    return hit


def _remote(ref: Any, field: str) -> InputImage:
    """`{file_id: ...}` (or `{url: https://...}`) or an https URL string: a reference the provider fetches."""
    if isinstance(ref, dict):
        if not ref or not set(ref) <= {"file_id", "url"}:
            raise _EntryError(field, f"{field}: expected {{file_id: ...}} or {{url: https://...}} (got {ref!r})")
        kwargs = {k: v for k, v in ref.items()}
    else:
        kwargs = {"url": ref}
    try:
        return InputImage.remote(**kwargs, field=field)
    except InvalidRequest as exc:
        raise _EntryError(field, exc.message) from None


def _job_id(entry: dict[str, Any]) -> str | None:
    value = entry.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) else None


def parse_entry(
    entry: Any, base: Path, *, line: int | None = None, cache: dict[Path, InputImage | InvalidRequest] | None = None
) -> tuple[Job | None, list[_EntryError]]:
    """One manifest entry -> a Job, or every problem with it (field, message)."""
    cache = {} if cache is None else cache
    if not isinstance(entry, dict):
        return None, [_EntryError(None, f"expected a mapping of job fields (got {type(entry).__name__})")]
    errors: list[_EntryError] = []
    for key in entry:
        if key not in FIELDS:
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(FIELDS)})"
            errors.append(_EntryError(str(key), f"unknown field {key!r}{hint}"))
    job_id = _job_id(entry)
    if job_id is None:
        errors.append(_EntryError("id", f"id: expected a string (got {entry.get('id')!r})"))
    elif not _ID.match(job_id):
        errors.append(
            _EntryError(
                "id", f"id={job_id!r}: expected letters, digits, '.', '_' or '-' (at most 128; it names output files)"
            )
        )
    prompt = entry.get("prompt")
    if not isinstance(prompt, str):
        errors.append(_EntryError("prompt", f"prompt: expected a string (got {prompt!r})"))
    opts: dict[str, Any] = {}
    for key in _STR_FIELDS:
        if entry.get(key) is not None:
            if isinstance(entry[key], str):
                opts[key] = entry[key]
            else:
                errors.append(_EntryError(key, f"{key}: expected a string (got {entry[key]!r})"))
    for key in _INT_FIELDS:
        value = entry.get(key)
        if value is not None:
            if isinstance(value, int) and not isinstance(value, bool):
                opts[key] = value
            else:
                errors.append(_EntryError(key, f"{key}: expected an integer (got {value!r})"))
    tags = entry.get("tags") or ()
    tags = (tags,) if isinstance(tags, str) else tags
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        errors.append(_EntryError("tags", f"tags: expected a list of strings (got {entry.get('tags')!r})"))
        tags = ()
    backend = entry.get("backend")
    if backend is not None and not isinstance(backend, str):
        errors.append(_EntryError("backend", f"backend: expected a backend name (got {backend!r})"))
    deadline = None
    if entry.get("deadline") is not None:
        try:
            deadline = parse_deadline(entry["deadline"])
        except ValueError as exc:
            errors.append(_EntryError("deadline", f"deadline: {exc}"))
    if ("image" in entry) == ("images" in entry):
        errors.append(_EntryError("image", "give exactly one of `image` (a path) or `images` (a list of paths)"))
        paths: list[Any] = []
    else:
        paths = [entry["image"]] if "image" in entry else entry["images"]
        if not isinstance(paths, list):
            errors.append(_EntryError("images", f"images: expected a list of paths (got {paths!r})"))
            paths = []
    images = []
    for i, p in enumerate(paths):
        try:
            images.append(_probe(p, base, "image" if "image" in entry else f"images[{i}]", cache))
        except _EntryError as exc:
            errors.append(exc)
    layers: dict[str, InputImage] = {}
    for layer in ("mask", "markup"):
        if entry.get(layer) is not None:
            try:
                layers[layer] = _probe(entry[layer], base, layer, cache)
            except _EntryError as exc:
                errors.append(exc)
    # Check the options too, even when something above is wrong, so every problem shows at once.
    request = EditRequest(
        prompt=prompt if isinstance(prompt, str) else "-", images=tuple(images), job_id=job_id, **layers, **opts
    )
    reported = {e.field.split("[")[0] for e in errors if e.field}
    for p in request_problems(request):
        field = (p.field or "").split("[")[0]
        if field not in reported and not (field == "image" and "images" in reported):
            errors.append(_EntryError(p.field, p.message))
    if errors:
        return None, errors
    job = Job(id=job_id, request=request, tags=tuple(tags), backend=backend, line=line, deadline=deadline)  # type: ignore[arg-type]
    return job, []


def _yaml_entries(path: Path) -> Iterator[tuple[int | None, Any]]:
    from pipeline.configfile import load_yaml  # YAML manifests are small: parsed whole, with line numbers

    doc = load_yaml(path, "manifest")
    root = doc.root
    loc: list[str] = []
    if isinstance(doc.data, dict) and "jobs" in doc.data:
        loc = ["jobs"]
        data = doc.data["jobs"]
    else:
        data = doc.data
    if data is None:
        return
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of jobs, or a mapping with `jobs:` (got {type(data).__name__})")
    if loc and root is not None:
        root = next(v for k, v in root.value if k.value == "jobs")
    nodes = root.value if root is not None else []
    for i, entry in enumerate(data):
        yield (nodes[i].start_mark.line + 1 if i < len(nodes) else None), entry


def _jsonl_entries(path: Path) -> Iterator[tuple[int | None, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as exc:
                yield lineno, _EntryError(None, f"not valid JSON: {exc.msg} (column {exc.colno})")


class Manifest:
    """A manifest file read in streaming passes: `check()` for all problems, then `jobs()` for the valid jobs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: manifest not found")
        self.base = self.path.parent
        self._cache: dict[Path, InputImage | InvalidRequest] = {}
        self._bad: set[int] | None = None
        self._dup_ids: set[str] = set()
        self.problems: list[ManifestProblem] = []
        self.entries = 0  # entries seen by check()
        self.valid = 0  # jobs check() found runnable

    def _raw(self) -> Iterator[tuple[int | None, Any]]:
        if self.path.suffix.lower() in (".jsonl", ".ndjson"):
            return _jsonl_entries(self.path)
        if self.path.suffix.lower() == ".json":
            return self._json_entries()
        return _yaml_entries(self.path)

    def _json_entries(self) -> Iterator[tuple[int | None, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        data = data.get("jobs") if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ConfigError(f'{self.path}: expected a list of jobs, or an object with "jobs"')
        yield from ((None, entry) for entry in data)

    def _parse(self) -> Iterator[tuple[int, int | None, Any, Job | None, list[_EntryError]]]:
        for index, (line, entry) in enumerate(self._raw()):
            if isinstance(entry, _EntryError):
                yield index, line, entry, None, [entry]
            else:
                job, errors = parse_entry(entry, self.base, line=line, cache=self._cache)
                yield index, line, entry, job, errors

    def check(self) -> list[ManifestProblem]:
        """Pass 1: every problem in the manifest (bad fields, missing files, bad options, duplicate ids)."""
        problems: list[ManifestProblem] = []
        bad: set[int] = set()
        first_seen: dict[str, tuple[int, int | None, bool]] = {}  # id -> (index, line, valid)
        dups: dict[str, list[tuple[int, int | None, bool]]] = {}
        entries = valid = 0
        for index, line, entry, _job, errors in self._parse():
            entries += 1
            job_id = _job_id(entry) if isinstance(entry, dict) else None
            for err in errors:
                problems.append(ManifestProblem(str(self.path), index, line, job_id, err.field, err.message))
            if errors:
                bad.add(index)
            else:
                valid += 1
            if job_id is not None:
                here = (index, line, not errors)
                if job_id in first_seen:
                    dups.setdefault(job_id, [first_seen[job_id]]).append(here)
                else:
                    first_seen[job_id] = here
        for job_id, where in dups.items():
            places = ", ".join(f"line {ln}" if ln is not None else f"entry {i + 1}" for i, ln, _ in where)
            for index, line, ok in where:
                valid -= ok
                problems.append(
                    ManifestProblem(
                        str(self.path),
                        index,
                        line,
                        job_id,
                        "id",
                        f"duplicate id {job_id!r} ({places}); ids must be unique so a rerun can skip finished jobs",
                    )
                )
        self._dup_ids = set(dups)
        self._bad = bad
        self.entries = entries
        self.valid = valid
        self.problems = sorted(problems, key=lambda p: (p.index, p.field or ""))
        return self.problems

    def jobs(self) -> Iterator[Job]:
        """Pass 2: the valid jobs in order (runs `check()` first if it has not run)."""
        if self._bad is None:
            self.check()
        bad = self._bad or set()
        for index, _line, _entry, job, errors in self._parse():
            if job is None or errors or index in bad or job.id in self._dup_ids:
                continue
            yield job

    __iter__ = jobs


def validate_manifest(path: str | Path) -> tuple[list[Job], list[ManifestProblem]]:
    """The valid jobs (in memory: for small manifests and tests) and every problem."""
    manifest = Manifest(path)
    problems = manifest.check()
    return list(manifest.jobs()), problems


def load_jobs(path: str | Path) -> list[Job]:
    """All jobs, or a `ConfigError` listing every problem."""
    jobs, problems = validate_manifest(path)
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(map(str, problems)))
    return jobs
