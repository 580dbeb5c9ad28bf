"""Image references in a JSON edit body (`images: [{file_id} | {image_url}]`, `mask`, `markup`), as OpenAI takes
them (https://developers.openai.com/api/reference/resources/images/methods/edit): exactly one of `file_id` (an
OpenAI Files id) or `image_url` (a data URL, or an https URL).

- A data URL (`data:image/png;base64,...`, at most 20,971,520 characters) is decoded here and checked like an
  upload (`probe.probe_image`).
- A file id is the provider's: it stays a remote reference (`InputImage.remote`), which only backends that take
  remote references (OpenAI's) are given.
- An https URL is downloaded here when `ServeSettings.fetch_image_urls` allows it (https only, no redirects, the
  upload size limit, a time limit for the whole download, and no loopback/private/link-local address unless
  `fetch_private_hosts`); otherwise it stays a remote reference for the provider to fetch.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from backends.errors import InvalidRequest
from backends.images import InputImage
from pipeline.serve.fields import bad
from pipeline.serve.probe import MIMES, probe_image
from pipeline.serve.settings import ServeSettings
from pipeline.serve.wire import ApiError, Limits

MAX_IMAGE_URL_CHARS = 20_971_520  # OpenAI's `image_url` maxLength
_DATA_URL = re.compile(r"^data:([A-Za-z0-9.+/-]+)(;[^,]*)?,", re.ASCII)


class Refs:
    """Turns JSON image references into `InputImage`s (a thread may block here on a download)."""

    def __init__(self, settings: ServeSettings, limits: Limits, client: httpx.Client | None = None) -> None:
        self.settings, self.limits = settings, limits
        self._client = client

    def image(self, ref: Any, param: str) -> InputImage:
        if not isinstance(ref, dict):
            raise ApiError(
                400,
                f"Invalid type for '{param}': expected an object with `image_url` or `file_id`.",
                param=param,
                code="invalid_type",
            )
        unknown = [k for k in ref if k not in ("file_id", "image_url")]
        if unknown:
            raise bad(f"Unknown parameter: '{param}.{unknown[0]}'.", f"{param}.{unknown[0]}", "unknown_parameter")
        given = [k for k in ("file_id", "image_url") if ref.get(k) is not None]
        if len(given) != 1:
            raise bad(f"Invalid '{param}': provide exactly one of `image_url` or `file_id`.", param, "invalid_value")
        key = given[0]
        value = ref[key]
        where = f"{param}.{key}"
        if not isinstance(value, str):
            raise ApiError(400, f"Invalid type for '{where}': expected a string.", param=where, code="invalid_type")
        if len(value) > MAX_IMAGE_URL_CHARS:
            raise bad(
                f"Invalid '{where}': string too long. Expected a string with maximum length "
                f"{MAX_IMAGE_URL_CHARS}, but got a string with length {len(value)} instead.",
                where,
                "string_above_max_length",
            )
        if key == "file_id":
            return _remote(where, file_id=value)
        if value.startswith("data:"):
            return self._data_url(value, param)
        if not value.lower().startswith("https://"):
            raise bad(f"Invalid '{where}': expected an https URL or a base64 data URL.", where, "invalid_value")
        if not self.settings.fetch_image_urls:
            return _remote(where, url=value)
        return self._fetch(value, param)

    def _data_url(self, url: str, param: str) -> InputImage:
        m = _DATA_URL.match(url)
        if m is None or ";base64" not in (m.group(2) or ""):
            raise bad(
                f"Invalid '{param}.image_url': expected a base64 data URL (data:image/png;base64,...).",
                param,
                "invalid_value",
            )
        mime = m.group(1).lower()
        if mime not in MIMES and mime != "image/jpg":
            raise ApiError(
                400,
                f"Invalid file '{param}': unsupported mimetype ('{mime}'). Supported file formats are "
                "'image/jpeg', 'image/png', and 'image/webp'.",
                param=param,
                code="unsupported_file_mimetype",
            )
        try:
            data = base64.b64decode(url[m.end() :], validate=True)
        except (binascii.Error, ValueError):
            why = f"Invalid '{param}.image_url': the data URL is not valid base64."
            raise bad(why, param, "invalid_value") from None
        return probe_image(data, param=param, name=f"{param}.png", max_pixels=self.limits.max_image_pixels)

    def _fetch(self, url: str, param: str) -> InputImage:
        """Download an https image with the upload's size limit, a deadline for the whole download, no redirects
        and (unless allowed) no private address."""
        host = urlsplit(url).hostname or ""
        if not self.settings.fetch_private_hosts:
            _refuse_private(host, url, param)
        deadline = time.monotonic() + self.settings.fetch_timeout_s
        cap = self.limits.max_image_bytes
        try:
            with self._http().stream("GET", url, timeout=self.settings.fetch_timeout_s) as response:
                if response.status_code != 200:
                    raise _download_error(url, param, f"HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > cap:
                    raise _download_error(url, param, f"{int(declared):,} bytes, above the limit of {cap:,}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise _download_error(url, param, f"more than the limit of {cap:,} bytes")
                    if time.monotonic() > deadline:
                        raise _download_error(url, param, f"slower than {self.settings.fetch_timeout_s:g} s")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _download_error(url, param, exc.__class__.__name__) from None
        name = urlsplit(url).path.rsplit("/", 1)[-1] or param
        return probe_image(b"".join(chunks), param=param, name=name, max_pixels=self.limits.max_image_pixels)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(follow_redirects=False)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _remote(param: str, **ref: str) -> InputImage:
    try:
        return InputImage.remote(**ref, field=param)
    except InvalidRequest as exc:
        raise bad(f"Invalid '{param}': {exc.message}", param, "invalid_value") from None


def _download_error(url: str, param: str, why: str) -> ApiError:
    return ApiError(
        400, f"Error while downloading {url[:200]}: {why}.", param=f"{param}.image_url", code="invalid_image_url"
    )


def _refuse_private(host: str, url: str, param: str) -> None:
    """A loopback, private, link-local or otherwise non-public address is refused (SSRF)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError):
        raise _download_error(url, param, f"cannot resolve {host!s}") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global:
            raise _download_error(url, param, "it is on a private or local address, which this server does not fetch")
