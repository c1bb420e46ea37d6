"""``portkey``: any model behind Portkey's AI gateway, through its OpenAI-compatible API.

The ``openai`` backend with Portkey's base URL (``https://api.portkey.ai/v1``) and the
``x-portkey-*`` headers the ``portkey-ai`` SDK sends (``x-portkey-api-key``, then one per
Portkey setting: ``x-portkey-provider``, ``x-portkey-virtual-key``, ``x-portkey-config``,
``x-portkey-trace-id``, ...). Requests go over the ``openai`` backend's transports (direct
by default), so ``pip install 'rlm-core[portkey]'`` installs the ``openai`` SDK, not
``portkey-ai``. Usage is the upstream provider's, passed through by the gateway.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rlm_core.backends.base import resolve_api_key
from rlm_core.backends.openai import PLACEHOLDER_API_KEY, OpenAIBackend
from rlm_core.exceptions import BackendError
from rlm_core.types import Messages

if TYPE_CHECKING:
    from openai import OpenAI

PORTKEY_BASE_URL = "https://api.portkey.ai/v1"
PORTKEY_HOST = "api.portkey.ai"
API_KEY_VAR = "PORTKEY_API_KEY"
HEADER_PREFIX = "x-portkey-"

PORTKEY_SETTINGS = frozenset(
    {
        "virtual_key",
        "provider",
        "config",
        "trace_id",
        "metadata",
        "cache_namespace",
        "cache_force_refresh",
        "debug",
        "custom_host",
        "forward_headers",
        "request_timeout",
        "strict_open_ai_compliance",
        "openai_project",
        "openai_organization",
        "aws_secret_access_key",
        "aws_access_key_id",
        "aws_session_token",
        "aws_region",
        "vertex_project_id",
        "vertex_region",
        "workers_ai_account_id",
        "azure_resource_name",
        "azure_deployment_id",
        "azure_api_version",
        "azure_endpoint_name",
        "huggingface_base_url",
        "anthropic_beta",
        "anthropic_version",
        "mistral_fim_completion",
        "vertex_storage_bucket_name",
        "provider_file_name",
        "provider_model",
        "aws_s3_bucket",
        "aws_s3_object_key",
        "aws_bedrock_model",
        "fireworks_account_id",
    }
)
"""``backend_kwargs`` sent as ``x-portkey-<name>`` headers (``_`` becomes ``-``), as the
``portkey-ai`` SDK's constructor arguments of the same names are."""


def header_value(value: Any) -> str:
    """A Portkey setting as a header value, as the ``portkey-ai`` SDK writes it: mappings
    as JSON, lists comma-separated, booleans ``true`` / ``false``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def portkey_headers(api_key: str | None, settings: Mapping[str, Any]) -> dict[str, str]:
    """The ``x-portkey-*`` headers of ``api_key`` and ``settings`` (``None`` values left out)."""
    headers = {f"{HEADER_PREFIX}api-key": api_key} if api_key else {}
    for name, value in settings.items():
        if value is not None:
            headers[HEADER_PREFIX + name.replace("_", "-")] = header_value(value)
    return headers


def omit(sdk: ModuleType) -> Any:
    """The ``openai`` SDK's marker for a header to leave out (``openai.Omit``, which older
    releases keep in ``openai._types``)."""
    cls = getattr(sdk, "Omit", None) or importlib.import_module(f"{sdk.__name__}._types").Omit
    return cls()


class PortkeyBackend(OpenAIBackend):
    """Portkey's AI gateway (``https://api.portkey.ai/v1``); key ``PORTKEY_API_KEY``.

    ``backend_kwargs`` are those of ``openai`` (``model_name``, ``sampling_args``,
    ``timeout``, ``max_retries``, ``retry_backoff``, ``transport``, ``default_headers``,
    ...), plus:

    * ``api_key``: the Portkey API key, sent as ``x-portkey-api-key``; default
      ``PORTKEY_API_KEY``; required for Portkey's hosted gateway, optional for a
      self-hosted one (another ``base_url``).
    * ``base_url``: default ``https://api.portkey.ai/v1``.
    * the Portkey settings of :data:`PORTKEY_SETTINGS` (``provider``, ``virtual_key``,
      ``config``, ``trace_id``, ``metadata``, ...), sent as ``x-portkey-*`` headers.
    * ``authorization``: the upstream provider's key, sent as ``Authorization: Bearer ...``
      (with ``provider`` and no virtual key or config); no ``Authorization`` is sent
      without it.

    A 429's ``Retry-After`` is honoured.
    """

    name = "portkey"
    default_base_url = PORTKEY_BASE_URL
    base_url_env = None
    honours_retry_after = True

    def __init__(self, *args: Any, authorization: str | None = None, **kwargs: Any) -> None:
        self.portkey_settings: dict[str, Any] = {
            name: kwargs.pop(name) for name in sorted(PORTKEY_SETTINGS & set(kwargs))
        }
        """The Portkey settings sent as ``x-portkey-*`` headers."""
        self._authorization = authorization
        super().__init__(*args, **kwargs)

    def _create_client(
        self, sdk: ModuleType, api_key: str | None, base_url: str | None, kwargs: dict[str, Any]
    ) -> OpenAI:
        url = self._resolve_base_url(base_url)
        key = resolve_api_key(
            api_key,
            (API_KEY_VAR,),
            self.name,
            required=urlsplit(url or PORTKEY_BASE_URL).hostname == PORTKEY_HOST,
        )
        headers: dict[str, Any] = portkey_headers(key, self.portkey_settings)
        auth = self._authorization
        if auth and not auth.startswith("Bearer "):
            auth = f"Bearer {auth}"
        headers["Authorization"] = auth or omit(sdk)
        user_headers = kwargs.pop("default_headers", None) or {}
        if not isinstance(user_headers, Mapping):
            raise BackendError(f"backend {self.name!r}: default_headers must be a mapping")
        client: OpenAI = self._make_client(
            sdk.OpenAI,
            api_key=PLACEHOLDER_API_KEY,
            base_url=url,
            default_headers={**headers, **user_headers},
            **kwargs,
        )
        return client

    def _request(self, model: str, messages: Messages) -> dict[str, Any]:
        """As ``openai``'s, but ``max_tokens`` is sent as given, as the ``portkey-ai`` SDK
        sends it (not renamed ``max_completion_tokens``)."""
        sampling = {
            k: v for k, v in self.sampling_args.items() if v is not None and k != "extra_body"
        }
        request = self._with_sampling(sampling, model=model, messages=messages)
        if self._direct is None and not self._authorization:
            # The SDK sends no Authorization only when each request leaves it out as well.
            request["extra_headers"] = {
                **(request.get("extra_headers") or {}),
                "Authorization": omit(self._sdk),
            }
        return request
