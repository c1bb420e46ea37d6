"""What the network backends (``openai``, ``anthropic``, ``gemini``, ...) share.

:class:`RemoteBackend` retries calls on HTTP 408/429/5xx, connection errors and timeouts,
with exponential backoff, and reports every failure as one :class:`BackendError` line.
:class:`SDKBackend` is one built on a vendor SDK: it imports the SDK when a backend is
created, not when this module is imported, and turns the SDK's own retries off.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
import operator
import re
import sys
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any, ClassVar, TypeVar

from rlm_core.backends.base import DEFAULT_TIMEOUT, Backend, LMResponse, with_retries
from rlm_core.backends.context_limits import context_limit as lookup_context_limit
from rlm_core.backends.http_transport import HTTPConnectionError, HTTPError, HTTPStatusError
from rlm_core.exceptions import BackendError
from rlm_core.types import Messages

logger = logging.getLogger("rlm_core.backends.openai")
"""Logs the "no token usage" warning of every SDK backend (under its documented name)."""

T = TypeVar("T")

DEFAULT_MAX_RETRIES = 3
"""Retries after the first attempt of a call that failed transiently."""

DEFAULT_RETRY_BACKOFF = 0.5
"""Seconds before the first retry; doubled (with jitter) for each further retry."""

RETRYABLE_STATUSES = frozenset({408, 429})
"""HTTP statuses retried besides every 5xx."""


def import_sdk(module: str, backend: str) -> ModuleType:
    """Import an optional LM SDK, or raise :class:`BackendError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(
            f"backend {backend!r} needs the {module!r} package: pip install 'rlm-core[{module}]'"
        ) from exc


def http_library(sdk: ModuleType) -> ModuleType | None:
    """The HTTP library (``httpx`` or ``httpx2``) ``sdk.DefaultHttpxClient`` is built on, if any."""
    for cls in getattr(getattr(sdk, "DefaultHttpxClient", None), "__mro__", ()):
        library = sys.modules.get(cls.__module__.partition(".")[0])
        if library is not None and library is not sdk and hasattr(library, "MockTransport"):
            return library
    return None


def settings_only_http_client(sdk: ModuleType) -> Any | None:
    """An HTTP client for an SDK client that holds settings (key, URL, headers) but sends nothing.

    ``sdk.DefaultHttpxClient`` on a transport that refuses every request, with proxy variables
    ignored: it loads no CA certificates, which the SDK's own HTTP client does (20-60 ms).
    ``None`` when the SDK has no such class (its own client is then the only choice).
    """
    library = http_library(sdk)
    if library is None:
        return None

    def refuse(request: Any) -> Any:
        raise RuntimeError(f"this client holds settings only and sends nothing: {request.url}")

    return sdk.DefaultHttpxClient(transport=library.MockTransport(refuse), trust_env=False)


def check_retry_settings(max_retries: int, retry_backoff: float) -> None:
    """Reject negative ``max_retries`` / ``retry_backoff`` with a clear error."""
    if not isinstance(max_retries, int) or max_retries < 0:
        raise BackendError(f"max_retries must be an int >= 0, not {max_retries!r}")
    if retry_backoff < 0:
        raise BackendError(f"retry_backoff must be >= 0 seconds, not {retry_backoff!r}")


def is_transient(
    exc: BaseException,
    status_error: type[BaseException],
    connection_error: type[BaseException],
) -> bool:
    """Whether an SDK error is worth retrying: HTTP 408/429/5xx, connection errors, timeouts."""
    if isinstance(exc, connection_error):  # the SDKs' timeout errors subclass this
        return True
    if isinstance(exc, status_error):
        status = int(getattr(exc, "status_code", 0) or 0)
        return status in RETRYABLE_STATUSES or status >= 500
    return False


def server_message(exc: BaseException) -> str:
    """The error message a server sent with an HTTP error (or the SDK's message)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str) and err:
            return err
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return str(getattr(exc, "message", None) or exc)


def describe_error(exc: BaseException, status_error: type[BaseException], timeout: float) -> str:
    """A one-line description of a failed API call."""
    if isinstance(exc, status_error):
        return f"HTTP {getattr(exc, 'status_code', '?')}: {server_message(exc)}"
    if "timeout" in type(exc).__name__.lower():
        return f"timed out (timeout={timeout}s)"
    cause = exc.__cause__ or exc.__context__
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    return f"{type(exc).__name__}: {exc}{detail}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")
"""A protobuf ``Duration`` in JSON (``"17s"``, ``"0.250s"``)."""


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    return None if value is None else str(value)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _retry_info(body: Any) -> float | None:
    """``retryDelay`` of a ``google.rpc.RetryInfo`` in a Google API error body."""
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def retry_after_seconds(exc: BaseException) -> float | None:
    """How long the server asked to wait before retrying a failed request, if it said.

    Read from the response headers ``retry-after-ms`` and ``Retry-After`` (seconds or an
    HTTP date), then from a ``google.rpc.RetryInfo`` detail (``retryDelay``) in the error
    body. Works with :class:`~rlm_core.backends.http_transport.HTTPStatusError` and the SDKs'
    status errors (their ``response.headers`` and ``body``).
    """
    headers = getattr(exc, "headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    millis = _seconds(_header(headers, "retry-after-ms"))
    if millis is not None:
        return millis / 1000
    seconds = _seconds(_header(headers, "retry-after"))
    if seconds is not None:
        return seconds
    return _retry_info(getattr(exc, "body", None))


def preview(data: Any, limit: int = 200) -> str:
    """``data`` as JSON (``None`` fields of a dict left out), cut to ``limit`` characters."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if v is not None}
    try:
        text = json.dumps(data, default=str)
    except ValueError:
        text = repr(data)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class ErrorTypes:
    """The exception classes of one way of calling an API (an SDK, or a plain HTTP client)."""

    base: type[BaseException]
    """Every failure of a call."""
    status: type[BaseException]
    """The server answered with an error status (has ``status_code``, and ``body``)."""
    connection: type[BaseException]
    """The exchange failed (connection errors; timeouts subclass it)."""


DIRECT_ERRORS = ErrorTypes(base=HTTPError, status=HTTPStatusError, connection=HTTPConnectionError)
"""The exceptions of :class:`~rlm_core.backends.http_transport.JSONTransport`, for retries
and error messages."""


class UsageWarning:
    """Logs "the reply had no usage" once per backend instance (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, where: str) -> None:
        """Log the warning unless this backend already did."""
        with self._lock:
            if self._warned:
                return
            self._warned = True
        logger.warning(
            "%s: the reply carried no token usage; recording 0 tokens for such replies "
            "(logged once per backend)",
            where,
        )


# -- request arguments -----------------------------------------------------------------------


def merge_extra_body(
    hardcoded: dict[str, Any] | None, sampling_args: dict[str, Any] | None
) -> dict[str, Any]:
    """``hardcoded`` updated with ``sampling_args["extra_body"]`` (the user's keys win)."""
    merged = dict(hardcoded or {})
    user = (sampling_args or {}).get("extra_body")
    if user:
        merged.update(user)
    return merged


def accepted_params(method: Callable[..., Any]) -> frozenset[str] | None:
    """Keyword parameters an SDK method declares (``None``: it takes any keyword)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def split_known(
    args: dict[str, Any], known: frozenset[str] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``args`` into those the SDK method takes and the rest (sent via ``extra_body``).

    SDK releases drop or lag behind request parameters (``temperature``, ``top_k``, ...);
    unknown ones still reach the server as top-level JSON fields this way.
    """
    if known is None:
        return dict(args), {}
    return (
        {k: v for k, v in args.items() if k in known},
        {k: v for k, v in args.items() if k not in known},
    )


# -- the base classes ------------------------------------------------------------------------


class RemoteBackend(Backend):
    """A backend that calls an LM API over the network.

    The constructor checks ``max_retries`` / ``retry_backoff``. :meth:`complete` builds the
    request with :meth:`_request`, sends it with :meth:`_send` (which runs the exchange
    through :meth:`_call`: retries, and errors turned into :class:`BackendError`) and reads
    the reply with :meth:`_parse`.
    """

    honours_retry_after: ClassVar[bool] = False
    """Whether a retried call waits at least as long as the server asks (``Retry-After``,
    ``retry-after-ms``, or a ``google.rpc.RetryInfo`` in the error body)."""

    base_url: str
    """The URL requests go to."""
    _errors: ErrorTypes

    def __init__(
        self,
        model_name: str | None = None,
        sampling_args: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_name=model_name, sampling_args=sampling_args, timeout=timeout, **kwargs
        )
        check_retry_settings(max_retries, retry_backoff)
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self._default_model = model_name or self._fallback_model()
        if self._default_model:
            self.model_name = self._default_model
        self._warn_no_usage = UsageWarning()

    # -- hooks -------------------------------------------------------------------------------

    def _fallback_model(self) -> str | None:
        """The default model when ``model_name`` is not given."""
        return None

    @abstractmethod
    def _request(self, model: str, messages: Messages) -> dict[str, Any]:
        """The request of one call."""

    @abstractmethod
    def _send(self, request: dict[str, Any], where: str) -> Any:
        """Send ``request`` (from :meth:`_request`) through :meth:`_call`; the reply."""

    @abstractmethod
    def _parse(self, response: Any, model: str, where: str) -> LMResponse:
        """The reply as an :class:`LMResponse`; :class:`BackendError` when it is malformed."""

    def _describe(self, exc: BaseException, kinds: ErrorTypes) -> str:
        """A one-line description of a failed exchange (see :func:`describe_error`)."""
        return describe_error(exc, kinds.status, self.timeout)

    # -- shared steps ------------------------------------------------------------------------

    def _where(self, model: str) -> str:
        return f"{self.name} ({self.base_url}, model {model!r})"

    def _call(self, call: Callable[[], T], where: str, errors: ErrorTypes | None = None) -> T:
        """Run ``call``, retrying transient errors; any failure becomes a :class:`BackendError`.

        ``errors`` are the exception classes ``call`` raises (default: the backend's).
        """
        kinds = errors or self._errors
        try:
            return with_retries(
                call,
                is_retryable=lambda exc: is_transient(exc, kinds.status, kinds.connection),
                max_retries=self.max_retries,
                backoff=self.retry_backoff,
                retry_after=retry_after_seconds if self.honours_retry_after else None,
            )
        except BackendError as exc:  # retries used up
            last = exc.__cause__ or exc
            raise BackendError(
                f"{where}: gave up after {self.max_retries + 1} attempts; last error: "
                f"{self._describe(last, kinds)}"
            ) from last
        except json.JSONDecodeError as exc:
            raise BackendError(f"{where}: the reply body is not valid JSON ({exc})") from exc
        except TypeError as exc:
            raise BackendError(
                f"{where}: the request arguments were rejected ({exc}); check sampling_args"
            ) from exc
        except kinds.base as exc:
            raise BackendError(f"{where}: {self._describe(exc, kinds)}") from exc

    # -- the Backend interface ---------------------------------------------------------------

    def complete(self, messages: Messages, model: str | None = None) -> LMResponse:
        """Send ``messages`` to ``model`` (default ``model_name``), retrying transient errors."""
        used_model = model or self._default_model
        if not used_model:
            raise BackendError(
                f"backend {self.name!r} needs a model: pass backend_kwargs={{'model_name': ...}}"
            )
        where = self._where(used_model)
        reply = self._send(self._request(used_model, messages), where)
        return self._parse(reply, used_model, where)

    def context_limit(self, model: str | None = None) -> int | None:
        """The context window of ``model`` (default ``model_name``) when it is a known model."""
        return lookup_context_limit(model or self._default_model)


class SDKBackend(RemoteBackend):
    """A backend that calls an LM API through a vendor SDK.

    The constructor imports the SDK named by :attr:`sdk_module` and creates the client with
    :meth:`_new_client` (without an HTTP client of its own when :meth:`_settings_only` says
    requests may go another way). Requests are sent through the SDK by default.
    """

    sdk_module: ClassVar[str]
    """The SDK's import name, which is also the ``rlm-core`` extra that installs it."""
    sdk_error: ClassVar[str]
    """The name of the SDK's base exception class."""
    create_method: ClassVar[str]
    """The client's request method, as a dotted path (``"messages.create"``, ...)."""

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str | None = None,
        base_url: str | None = None,
        sampling_args: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        **client_kwargs: Any,
    ) -> None:
        super().__init__(
            model_name, sampling_args, timeout, max_retries, retry_backoff, **client_kwargs
        )
        sdk = import_sdk(self.sdk_module, self.name)
        self._errors = ErrorTypes(
            base=getattr(sdk, self.sdk_error),
            status=sdk.APIStatusError,
            connection=sdk.APIConnectionError,
        )
        self._sdk = sdk
        self._client_args = (api_key, base_url, dict(client_kwargs))
        self._client: Any = self._new_client(sends=not self._settings_only())
        self.base_url = str(self._client.base_url)
        self._create_method = operator.attrgetter(self.create_method)
        self._create_params = accepted_params(self._create_method(self._client))

    # -- hooks -------------------------------------------------------------------------------

    def _settings_only(self) -> bool:
        """Whether requests may be sent another way than through the SDK client, which is
        then created to hold the settings only (see :func:`settings_only_http_client`)."""
        return False

    @abstractmethod
    def _create_client(
        self, sdk: ModuleType, api_key: str | None, base_url: str | None, kwargs: dict[str, Any]
    ) -> Any:
        """The SDK client (made with :meth:`_make_client`)."""

    # -- shared steps ------------------------------------------------------------------------

    def _new_client(self, *, sends: bool) -> Any:
        """A new SDK client from the constructor's arguments (:meth:`_create_client`).

        Unless it ``sends`` requests, it gets :func:`settings_only_http_client` as its HTTP
        client (when ``backend_kwargs`` name none).
        """
        api_key, base_url, kwargs = self._client_args
        kwargs = dict(kwargs)
        if not sends and "http_client" not in kwargs:
            http_client = settings_only_http_client(self._sdk)
            if http_client is not None:
                kwargs["http_client"] = http_client
        return self._create_client(self._sdk, api_key, base_url, kwargs)

    def _make_client(self, factory: Callable[..., Any], **kwargs: Any) -> Any:
        """``factory(**kwargs)`` with this backend's timeout and the SDK's retries off."""
        kwargs["timeout"] = self.timeout
        kwargs["max_retries"] = 0  # retried by _call()
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise BackendError(f"backend {self.name!r}: unsupported backend_kwargs: {exc}") from exc
        except self._errors.base as exc:
            raise BackendError(f"backend {self.name!r}: {exc}") from exc

    def _with_sampling(self, sampling: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """``fields`` and ``sampling`` as keyword arguments of the request method.

        Arguments the method does not declare go into ``extra_body``, with the user's
        ``sampling_args["extra_body"]``.
        """
        known, unknown = split_known(sampling, self._create_params)
        request: dict[str, Any] = {**fields, **known}
        extra_body = merge_extra_body(unknown, self.sampling_args)
        if extra_body:
            request["extra_body"] = extra_body
        return request

    def _send(self, request: dict[str, Any], where: str) -> Any:
        """Send ``request`` (from :meth:`_request`) through the SDK; the reply object."""
        return self._call(lambda: self._create_method(self._client)(**request), where)

    def close(self) -> None:
        """Close the SDK's HTTP connection pool."""
        self._client.close()
