"""Check plugvm's REST responses against cloud-hypervisor's OpenAPI spec.

plugvm's API must be wire-compatible with cloud-hypervisor's ``/api/v1``.  This
module lets tests hold each HTTP response they get up against the spec that
cloud-hypervisor publishes (vendored as ``data/cloud-hypervisor.yaml``, an
OpenAPI 3.0 document whose server is ``http://localhost/api/v1``).

Schema work is done by ``openapi-core`` (OpenAPI 3.0 response validation); this
module adds the rules the yaml does not express but cloud-hypervisor's server
follows on the wire (see :class:`ResponseValidator`).

Needs the ``test`` extra (``openapi-core``, ``PyYAML``); it is test-side only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.templating.paths.exceptions import (
    OperationNotFound,
    PathNotFound,
    ServerNotFound,
)
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.testing import MockRequest, MockResponse

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_SPEC_PATH",
    "TOLERATED_ERROR_STATUSES",
    "OpenApiMismatch",
    "ResponseValidator",
    "record",
]

DEFAULT_SPEC_PATH = Path(__file__).resolve().parent / "data" / "cloud-hypervisor.yaml"

#: Error statuses cloud-hypervisor really emits, whether or not the yaml lists
#: them for the operation (``api_error_status_code`` and the HTTP layer).
TOLERATED_ERROR_STATUSES = frozenset({400, 404, 405, 409, 429, 500})

_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_HOST_URL = "http://localhost"


class OpenApiMismatch(AssertionError):
    """A response does not match cloud-hypervisor's OpenAPI spec."""


@functools.lru_cache(maxsize=None)
def _load(spec_path: str) -> tuple[OpenAPI, dict[str, Any], str]:
    """Parse (and check) a spec once per process: openapi-core takes ~1 s."""
    openapi = OpenAPI.from_file_path(spec_path)
    with open(spec_path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    servers = raw.get("servers") or [{"url": "/"}]
    base_path = urlsplit(servers[0]["url"]).path.rstrip("/")
    return openapi, raw, base_path


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _drop_nulls(doc: Any) -> Any:
    """Remove ``null``-valued object members, recursively (see ResponseValidator)."""
    if isinstance(doc, dict):
        return {k: _drop_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, list):
        return [_drop_nulls(v) for v in doc]
    return doc


class ResponseValidator:
    """Validates (method, path, status, body) against the OpenAPI spec.

    :meth:`validate` raises :class:`OpenApiMismatch` when:

    * ``path`` is not under the spec's server path (``/api/v1``) or is not a
      path the spec defines;
    * the spec defines the path but not for ``method``.  Exception: a ``400``
      (or ``405``) with a valid error body is accepted, because
      cloud-hypervisor answers a wrong method with ``400``;
    * ``status`` is not listed for the operation.  Exception: cloud-hypervisor
      emits error statuses the yaml omits (e.g. ``500`` for ``VmNotRunning``,
      ``400`` for a wrong method; the yaml's ``405`` is never emitted), so an
      error status in :data:`TOLERATED_ERROR_STATUSES` (400, 404, 405, 409,
      429, 500) is accepted for any operation as long as its body is a
      cloud-hypervisor error body;
    * an error response (4xx/5xx) body is not a JSON array of strings (the
      error chain, outermost first) — checked for every error status, listed
      in the yaml or not, since the yaml declares no error content at all;
    * a ``204`` carries a body;
    * a 2xx body does not match the response's schema (or media type), or the
      spec declares content for the status and the body is empty.  Object
      members whose value is ``null`` are dropped before schema validation:
      cloud-hypervisor serialises every unset Rust ``Option`` as ``null``
      (e.g. ``"disks": null`` in ``vm.info``) while the 3.0 yaml marks nothing
      ``nullable``.  A ``null`` for a *required* member therefore still fails
      (as missing), and ``null`` inside arrays is not dropped.

    ``seen`` gets ``(METHOD, path, status)`` for every call of
    :meth:`validate`, conforming or not, so a session can summarise which
    operations were exercised (see :meth:`unseen_operations`).
    """

    def __init__(self, spec_path: str | Path | None = None) -> None:
        self.spec_path = Path(spec_path) if spec_path is not None else DEFAULT_SPEC_PATH
        self._openapi, self._raw, self.base_path = _load(str(self.spec_path.resolve()))
        self.seen: list[tuple[str, str, int]] = []

    # -- introspection ------------------------------------------------------

    def operations(self) -> list[tuple[str, str]]:
        """Every ``(METHOD, full path)`` the spec defines."""
        ops = []
        for rel, item in (self._raw.get("paths") or {}).items():
            for method in _HTTP_METHODS:
                if method in (item or {}):
                    ops.append((method.upper(), self.base_path + rel))
        return ops

    def unseen_operations(self) -> list[tuple[str, str]]:
        """Spec operations that no :meth:`validate` call has touched yet."""
        seen = {(m, p) for m, p, _ in self.seen}
        return [op for op in self.operations() if op not in seen]

    # -- validation -----------------------------------------------------------

    def validate(
        self,
        method: str,
        path: str,
        status: int,
        body: bytes | str | None,
        content_type: str | None = "application/json",
    ) -> None:
        """Raise :class:`OpenApiMismatch` unless the response conforms.

        ``path`` is the full request path, e.g. ``"/api/v1/vm.info"`` (a query
        string, if any, is ignored).
        """
        method = method.upper()
        path = urlsplit(path).path
        status = int(status)
        self.seen.append((method, path, status))
        if isinstance(body, str):
            body = body.encode()
        body = body or b""
        where = f"{method} {path} -> {status}"

        operation = self._operation(method, path, status, where)

        if 400 <= status <= 599:
            self._check_error(operation, status, body, content_type, where)
            return
        if operation is None:  # only tolerated for errors
            raise OpenApiMismatch(f"{where}: the spec defines no {method} for {path}")
        if status == 204 and body:
            raise OpenApiMismatch(
                f"{where}: 204 No Content must have no body, got {len(body)} bytes: {body[:200]!r}"
            )
        self._check_with_openapi_core(method, path, status, body, content_type, where)

    def _operation(self, method: str, path: str, status: int, where: str) -> dict | None:
        """The spec's operation object, or None for a tolerated wrong method."""
        if not (path == self.base_path or path.startswith(self.base_path + "/")):
            raise OpenApiMismatch(f"{where}: path is not under the API root {self.base_path!r}")
        rel = path[len(self.base_path) :]
        item = (self._raw.get("paths") or {}).get(rel)
        if item is None:
            raise OpenApiMismatch(f"{where}: unknown path {rel!r}; the spec does not define it")
        operation = item.get(method.lower())
        if operation is None:
            allowed = sorted(m.upper() for m in _HTTP_METHODS if m in item)
            if status in (400, 405):
                return None  # cloud-hypervisor's answer to a wrong method
            raise OpenApiMismatch(
                f"{where}: method {method} is not defined for {rel!r} (spec allows {allowed});"
                " cloud-hypervisor would answer a wrong method with 400"
            )
        return operation

    @staticmethod
    def _listed(operation: dict, status: int) -> bool:
        codes = {str(k).upper() for k in (operation.get("responses") or {})}
        return bool({str(status), f"{status // 100}XX", "DEFAULT"} & codes)

    def _check_error(
        self,
        operation: dict | None,
        status: int,
        body: bytes,
        content_type: str | None,
        where: str,
    ) -> None:
        if operation is not None and not self._listed(operation, status):
            if status not in TOLERATED_ERROR_STATUSES:
                listed = sorted(str(k) for k in operation.get("responses") or {})
                raise OpenApiMismatch(
                    f"{where}: status {status} is neither listed by the spec ({listed}) nor one"
                    f" cloud-hypervisor emits ({sorted(TOLERATED_ERROR_STATUSES)})"
                )
        mt = _media_type(content_type)
        if mt is not None and mt != "application/json":
            raise OpenApiMismatch(f"{where}: error Content-Type {content_type!r}, expected application/json")
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise OpenApiMismatch(
                f"{where}: error body is not JSON ({e}); cloud-hypervisor sends a JSON array"
                f" of strings: {body[:200]!r}"
            ) from None
        if not isinstance(doc, list) or not all(isinstance(s, str) for s in doc):
            raise OpenApiMismatch(
                f"{where}: error body must be a JSON array of strings (the error chain,"
                f" outermost first), got {type(doc).__name__}: {doc!r}"[:500]
            )

    def _check_with_openapi_core(
        self,
        method: str,
        path: str,
        status: int,
        body: bytes,
        content_type: str | None,
        where: str,
    ) -> None:
        operation = self._raw["paths"][path[len(self.base_path) :]][method.lower()]
        response = (operation.get("responses") or {}).get(status)
        if response is None:
            response = (operation.get("responses") or {}).get(str(status))
        if response is not None and response.get("content") and not body:
            raise OpenApiMismatch(
                f"{where}: the spec declares a {sorted(response['content'])} body for {status},"
                " got an empty body"
            )
        if body and content_type is None:
            raise OpenApiMismatch(f"{where}: a {len(body)}-byte body without a Content-Type")
        if body and _media_type(content_type) == "application/json":
            try:
                body = json.dumps(_drop_nulls(json.loads(body))).encode()
            except ValueError as e:
                raise OpenApiMismatch(f"{where}: body is not valid JSON ({e}): {body[:200]!r}") from None
        request = MockRequest(_HOST_URL, method.lower(), path)
        mock = MockResponse(
            body,
            status_code=status,
            headers={"Content-Type": content_type} if content_type else None,
            content_type=_media_type(content_type) or "application/json",
        )
        try:
            self._openapi.validate_response(request, mock)
        except ResponseNotFound:
            listed = sorted(str(k) for k in operation.get("responses") or {})
            raise OpenApiMismatch(f"{where}: status {status} is not listed by the spec ({listed})") from None
        except (PathNotFound, OperationNotFound, ServerNotFound) as e:
            raise OpenApiMismatch(f"{where}: {e}") from None
        except MediaTypeNotFound as e:
            raise OpenApiMismatch(f"{where}: Content-Type {content_type!r} not allowed: {e}") from None
        except Exception as e:  # openapi-core's validation errors
            raise OpenApiMismatch(f"{where}: {self._explain(e)}") from e

    @staticmethod
    def _explain(exc: BaseException) -> str:
        """Flatten openapi-core's chained error into the jsonschema messages."""
        def short(e: BaseException) -> str:
            text = str(e) or type(e).__name__
            return text if len(text) <= 300 else text[:300] + "..."

        parts = [short(exc)]
        cause = exc.__cause__ or exc.__context__
        while cause is not None:
            errors = getattr(cause, "schema_errors", None)
            if errors:
                for err in errors:
                    loc = "/".join(str(p) for p in err.absolute_path) or "<body>"
                    parts.append(f"  at {loc}: {err.message}")
                break
            parts.append(short(cause))
            cause = cause.__cause__ or cause.__context__
        return "\n".join(parts)


def record(validator: ResponseValidator, response: "httpx.Response") -> "httpx.Response":
    """Validate an ``httpx.Response`` (request path, status, body, Content-Type)
    and hand it back, so a test can write ``r = record(v, client.get(...))``."""
    request = response.request
    validator.validate(
        request.method,
        request.url.path,
        response.status_code,
        response.content,
        response.headers.get("content-type"),
    )
    return response
