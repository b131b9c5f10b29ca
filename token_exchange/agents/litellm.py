"""A LiteLLM gateway hook: reserve the worst case before a call, refuse it when the limits say no,
settle the real usage after it, void it when it fails.

Two ways in (extra ``litellm``):

- **Proxy** (``litellm --config config.yaml``): put an instance in ``litellm_settings.callbacks``::

      # token_exchange_hook.py, next to config.yaml
      from token_exchange.agents.litellm import TokenExchangeLogger
      hook = TokenExchangeLogger(models={"anthropic/claude-opus-*": "claude-opus", "gpt-4o*": "claude-sonnet"})

      # config.yaml
      litellm_settings:
        callbacks: token_exchange_hook.hook

  ``async_pre_call_hook`` reserves ``(prompt tokens + max_tokens) x`` the model's highest price for the
  agent of the request, and refuses with HTTP 429 and the seed's reason (and ``Retry-After`` when a
  window frees up) when a limit says no; ``async_post_call_success_hook`` (and, for streams, the success
  event) settles the usage the provider reported; ``async_post_call_failure_hook`` voids.
- **SDK** (``litellm.completion`` in your own process): LiteLLM swallows exceptions raised by loggers
  before the call (``Logging.pre_call`` catches them), so a logger cannot refuse there.  Call
  ``guarded_completion(hook, ...)`` / ``await aguarded_completion(hook, ...)`` instead of
  ``litellm.completion``: same arguments, reserved before, settled after, voided on an exception, and
  refused with ``token_exchange.errors.Refused`` (``LimitRefused``) before anything is sent.

The agent of a request: the key's alias (``UserAPIKeyAuth.key_alias``, the proxy's virtual key; it
wins, since a client chooses its metadata), else ``metadata["token_exchange_agent"]`` or
``metadata["agent"]``, else the hook's ``agent``, else ``$TOKEN_EXCHANGE_AGENT``.  The price: the
LiteLLM model name mapped by ``models`` (exact name, else the fnmatch pattern with the most literal
characters), else the name itself or its last ``/`` part when the price table has it.

A request without ``max_tokens`` gets ``default_max_tokens`` written into it, so the worst case that
was reserved is also the most the provider may generate.  A failure event of one attempt does not
void (the router may retry the same request on another deployment and succeed); the final failure
does (``async_post_call_failure_hook``), and a reservation nobody resolves expires after its TTL.

Checked against BerriAI/litellm (1.110.2): ``litellm/integrations/custom_logger.py`` (hook names and
signatures; callbacks are called with the keyword names ``kwargs, response_obj, start_time,
end_time``), ``litellm/proxy/utils.py`` (``pre_call_hook`` calls ``async_pre_call_hook`` only when the
class itself defines it, and lets its exceptions through), ``proxy/common_request_processing.py``
(an ``HTTPException``'s status code reaches the client), ``litellm_core_utils/litellm_logging.py``
(``pre_call`` swallows logger exceptions) and ``main.py`` (``mock_response``: usage of
``prompt_tokens`` 10 and ``completion_tokens`` 20 unless the mock is a full response).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from token_exchange import api
from token_exchange.errors import Refused, UserError

AGENT_ENV = "TOKEN_EXCHANGE_AGENT"
RESERVATION_KEY = "token_exchange_reservation"
AGENT_KEYS = ("token_exchange_agent", "agent")
METERED_CALLS = frozenset({"completion", "acompletion", "text_completion", "atext_completion", "responses",
                           "aresponses"})
_WILD = re.compile(r"[*?\[]")

Counter = Callable[[str, Mapping[str, Any]], int]


class GatewayRefusal(Exception):
    """Raised to the proxy when neither fastapi nor starlette is importable (the proxy always has fastapi)."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


def http_error(status: int, detail: str, headers: dict[str, str] | None = None) -> Exception:
    """The proxy's own ``HTTPException`` (its status code is what the client gets)."""
    try:
        from fastapi import HTTPException  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        try:
            from starlette.exceptions import HTTPException
        except ImportError:
            return GatewayRefusal(status, detail, headers)
    exc: Exception = HTTPException(status_code=status, detail=detail, headers=headers)
    return exc


@dataclass(frozen=True)
class Plan:
    """What to reserve for one request."""

    agent: str
    model: str  # the price-table name
    tokens: int  # prompt estimate + max_tokens
    reservation_id: str


def _metadata(data: Mapping[str, Any]) -> dict[str, Any]:
    """The request's metadata dict (``litellm_metadata`` on the routes that use it, else ``metadata``)."""
    for key in ("litellm_metadata", "metadata"):
        value = data.get(key)
        if isinstance(value, dict):
            return value
    return {}


def _event_metadata(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    params = kwargs.get("litellm_params")
    if isinstance(params, Mapping):
        meta = params.get("metadata")
        if isinstance(meta, Mapping) and RESERVATION_KEY in meta:
            return meta
        meta = params.get("litellm_metadata")
        if isinstance(meta, Mapping):
            return meta
    return _metadata(kwargs)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def usage_of(response: object) -> tuple[int, int] | None:
    """(input tokens, output tokens) reported by a response, chat or responses API; None if absent."""
    usage = getattr(response, "usage", None)
    if usage is None and isinstance(response, Mapping):
        usage = response.get("usage")
    if usage is None:
        return None

    def get(key: str) -> object:
        return usage.get(key) if isinstance(usage, Mapping) else getattr(usage, key, None)

    for i_key, o_key in (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens")):
        i, o = _int(get(i_key)), _int(get(o_key))
        if i is not None or o is not None:
            return i or 0, o or 0
    return None


def _event_usage(kwargs: Mapping[str, Any], response_obj: object) -> tuple[int, int] | None:
    found = usage_of(response_obj)
    if found is not None:
        return found
    slo = kwargs.get("standard_logging_object")
    if isinstance(slo, Mapping):
        i, o = _int(slo.get("prompt_tokens")), _int(slo.get("completion_tokens"))
        if i is not None or o is not None:
            return i or 0, o or 0
    return None


def default_counter(model: str, request: Mapping[str, Any]) -> int:
    """LiteLLM's own count of a request's prompt tokens (messages and tools, or text; the model's
    tokenizer when LiteLLM has one).  Images count at LiteLLM's default size: nothing is fetched."""
    import litellm

    prompt = next((request[k] for k in ("messages", "prompt", "input") if request.get(k) is not None), "")
    if isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(x, str) for x in prompt)):
        return int(litellm.token_counter(model=model, text=prompt))
    tools = request.get("tools")
    return int(litellm.token_counter(model=model, messages=prompt, tools=tools if isinstance(tools, list) else None,
                                     use_default_image_token_count=True))


class TokenExchangeLogger(CustomLogger):
    """The hook (see the module docstring).  ``tx``: an open exchange, else one is opened at ``home``
    on first use.  ``models``: LiteLLM model name or fnmatch pattern -> price-table model."""

    def __init__(self, tx: api.Exchange | None = None, *, home: str | None = None,
                 models: Mapping[str, str] | None = None, agent: str | None = None,
                 default_max_tokens: int = 4096, task: str = "llm", ttl: int | None = None,
                 count_tokens: Counter | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tx = tx
        self._home = home
        self.models = dict(models or {})
        self.agent = agent
        self.default_max_tokens = api._count(default_max_tokens, "default_max_tokens")
        self.task = task
        self.ttl = ttl
        self.count_tokens = count_tokens or default_counter

    @property
    def tx(self) -> api.Exchange:
        if self._tx is None:
            self._tx = api.open(self._home)
        return self._tx

    # --- deciding what to reserve ------------------------------------------------------------------
    def price_model(self, name: str) -> str:
        """The price-table model for a LiteLLM model name (UserError when there is none)."""
        known = self.tx.cfg.models
        if name in self.models:
            target = self.models[name]
        else:
            best: tuple[int, int, str] | None = None
            for pattern, value in self.models.items():
                if _WILD.search(pattern) and fnmatch.fnmatchcase(name, pattern):
                    rank = (len(_WILD.sub("", pattern)), -len(_WILD.findall(pattern)), value)
                    if best is None or rank[:2] > best[:2]:
                        best = rank
            if best is not None:
                target = best[2]
            elif name in known:
                target = name
            elif name.rsplit("/", 1)[-1] in known:
                target = name.rsplit("/", 1)[-1]
            else:
                raise UserError(f"no price for model {name[:80]!r}: map it to one of {', '.join(sorted(known))} "
                                "(TokenExchangeLogger(models={...}))")
        self.tx.cfg.model(target)  # a mapping to a model the price table lacks is refused too
        return target

    def agent_of(self, metadata: Mapping[str, Any], key_alias: str | None = None) -> str:
        """The agent who pays for a request (see the module docstring)."""
        for candidate in (key_alias, *(metadata.get(k) for k in AGENT_KEYS), metadata.get("user_api_key_alias"),
                          self.agent, os.environ.get(AGENT_ENV)):
            if isinstance(candidate, str) and candidate:
                self.tx.cfg.agent(candidate)
                return candidate
        raise UserError("no agent for this request: use a key whose alias is the agent's name, or pass "
                        "metadata={'token_exchange_agent': NAME}")

    def plan(self, data: dict[str, Any], *, agent: str | None = None, key_alias: str | None = None) -> Plan:
        """What a request will reserve; writes ``max_tokens`` into ``data`` when it has none."""
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise UserError("the request names no model")
        price_model = self.price_model(model)
        who = agent or self.agent_of(_metadata(data), key_alias)
        cap_key = next((k for k in ("max_tokens", "max_completion_tokens", "max_output_tokens") if data.get(k)
                        is not None), None)
        if cap_key is None:
            cap_key = "max_output_tokens" if "input" in data and "messages" not in data else "max_tokens"
            data[cap_key] = self.default_max_tokens
        cap = api._count(data[cap_key], cap_key)
        try:
            estimate = max(0, int(self.count_tokens(model, data)))
        except Exception:  # noqa: BLE001  (any tokenizer failure: fall back to an upper bound, >= 1 char a token)
            estimate = sum(len(str(data.get(k) or "")) for k in ("messages", "prompt", "input", "tools"))
        return Plan(who, price_model, estimate + cap, f"litellm-{uuid.uuid4().hex[:24]}")

    def reserve(self, plan: Plan) -> api.Reservation:
        return self.tx.reserve(plan.agent, plan.model, plan.tokens, task=self.task, id=plan.reservation_id,
                               ttl=self.ttl)

    def close(self, reservation_id: str, usage: tuple[int, int] | None) -> api.ReservationInfo | None:
        """Settle ``usage`` (void when there is none or it is 0) if the reservation is still open."""
        try:
            info = self.tx.reservation(reservation_id)
            if info.state != "open":
                return info
            if usage is None or sum(usage) == 0:
                return self.tx.void(reservation_id)
            return self.tx.settle(reservation_id, input_tokens=usage[0], output_tokens=usage[1])
        except UserError:
            return None  # resolved meanwhile by the other success path, or expired

    # --- proxy hooks ---------------------------------------------------------------------------------
    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: str) -> dict[str, Any]:
        """Reserve the worst case, or refuse: 429 with the limit's reason, 400 for a request we cannot
        price or attribute."""
        if call_type not in METERED_CALLS:
            return data
        alias = getattr(user_api_key_dict, "key_alias", None)
        try:
            plan = self.plan(data, key_alias=alias if isinstance(alias, str) else None)
            r = await asyncio.to_thread(self.reserve, plan)
        except Refused as e:
            raise http_error(429, _line(e), _retry_after(self.tx, e)) from None
        except UserError as e:
            raise http_error(400, _line(e)) from None
        key = "litellm_metadata" if isinstance(data.get("litellm_metadata"), dict) else "metadata"
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data[key][RESERVATION_KEY] = r.id
        return data

    async def async_post_call_success_hook(self, data: dict[str, Any], user_api_key_dict: Any,
                                           response: Any) -> Any:
        rid = _metadata(data).get(RESERVATION_KEY)
        if isinstance(rid, str):
            await asyncio.to_thread(self.close, rid, usage_of(response))
        return response

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: str | None = None) -> None:
        rid = _metadata(request_data).get(RESERVATION_KEY)
        if isinstance(rid, str):
            await asyncio.to_thread(self.close, rid, None)

    # --- logging events (streams in the proxy; any call tagged with a reservation) -------------------
    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        rid = _event_metadata(kwargs).get(RESERVATION_KEY)
        if isinstance(rid, str):
            await asyncio.to_thread(self.close, rid, _event_usage(kwargs, response_obj))

    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        rid = _event_metadata(kwargs).get(RESERVATION_KEY)
        if isinstance(rid, str):
            self.close(rid, _event_usage(kwargs, response_obj))

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        """One failed attempt: nothing (the router may retry it; the final failure voids, else the TTL)."""

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        """One failed attempt: nothing (see ``log_failure_event``)."""

    # --- the SDK path ------------------------------------------------------------------------------
    def completion(self, *, agent: str | None = None, **kwargs: Any) -> Any:
        """``litellm.completion(**kwargs)`` under a reservation (see ``guarded_completion``)."""
        import litellm

        if kwargs.get("stream"):
            raise UserError("guarded completion does not stream; call without stream=True (or use the proxy hook)")
        with self.reserve(self.plan(kwargs, agent=agent)) as r:
            response = litellm.completion(**kwargs)
            _record(r, usage_of(response))
        return response

    async def acompletion(self, *, agent: str | None = None, **kwargs: Any) -> Any:
        """``await litellm.acompletion(**kwargs)`` under a reservation."""
        import litellm

        if kwargs.get("stream"):
            raise UserError("guarded completion does not stream; call without stream=True (or use the proxy hook)")
        plan = self.plan(kwargs, agent=agent)
        r = await asyncio.to_thread(self.reserve, plan)
        try:
            response = await litellm.acompletion(**kwargs)
        except BaseException:
            await asyncio.to_thread(_quietly_finish, r)
            raise
        _record(r, usage_of(response))
        await asyncio.to_thread(r.__exit__, None, None, None)
        return response


def _record(r: api.Reservation, usage: tuple[int, int] | None) -> None:
    if usage is not None and sum(usage) > 0:
        r.use(input_tokens=usage[0], output_tokens=usage[1])


def _quietly_finish(r: api.Reservation) -> None:
    r.__exit__(RuntimeError, RuntimeError("the call failed"), None)


def _line(e: Exception) -> str:
    return " ".join(str(e).split()) or "refused"


def _retry_after(tx: api.Exchange, e: Exception) -> dict[str, str] | None:
    from token_exchange.rules.limits import LimitRefused, micros

    if isinstance(e, LimitRefused) and e.frees_at_us is not None:
        seconds = max(1, -(-(e.frees_at_us - micros(tx.svc.clock())) // 1_000_000))
        return {"Retry-After": str(seconds)}
    return None


def guarded_completion(hook: TokenExchangeLogger, *, agent: str | None = None, **kwargs: Any) -> Any:
    """``litellm.completion`` for the SDK: reserve the worst case first (``Refused`` before anything is
    sent when a limit says no), settle the reported usage after, void if the call raises."""
    return hook.completion(agent=agent, **kwargs)


async def aguarded_completion(hook: TokenExchangeLogger, *, agent: str | None = None, **kwargs: Any) -> Any:
    """``litellm.acompletion`` for the SDK, guarded the same way."""
    return await hook.acompletion(agent=agent, **kwargs)
