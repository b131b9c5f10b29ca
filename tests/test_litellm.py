"""The LiteLLM hook: the proxy's call hooks (reserve, 429, settle, void) and the SDK wrapper, with LiteLLM's
own ``mock_response`` and its bundled cost map (no network), including 32 requests racing an hourly limit."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: never fetch its price map
litellm = pytest.importorskip("litellm", reason="the litellm extra is not installed "
                                                "(pip install 'token-exchange[litellm]'); CI should install it")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402  (after the cost-map setting)
from litellm.proxy._types import UserAPIKeyAuth  # noqa: E402

from tests.conftest import Clock, make_ex  # noqa: E402
from token_exchange import api  # noqa: E402
from token_exchange.agents.litellm import (  # noqa: E402
    RESERVATION_KEY,
    TokenExchangeLogger,
    aguarded_completion,
    guarded_completion,
)
from token_exchange.errors import UserError  # noqa: E402
from token_exchange.rules.limits import LimitRefused  # noqa: E402

D = Decimal
LIMITS = "[agents.claude.limits]\nhourly = 10\ndaily = 100000\nburst = 100000\nreserve = 0\n"
MESSAGES = [{"role": "user", "content": "hello there"}]
MODELS = {"gpt-4o": "claude-sonnet", "anthropic/claude-opus-*": "claude-opus"}


@pytest.fixture(autouse=True)
def no_global_callbacks() -> Any:
    saved = list(litellm.callbacks)
    yield
    litellm.callbacks = saved


def make(tmp_path: Path, clock: Clock, extra: str = LIMITS, **kw: Any) -> tuple[api.Exchange, TokenExchangeLogger]:
    tx = api.Exchange(make_ex(tmp_path / "ex", clock, extra))
    return tx, TokenExchangeLogger(tx, models=MODELS, **kw)


def prompt_tokens() -> int:
    return int(litellm.token_counter(model="gpt-4o", messages=MESSAGES))


def full_usage(max_tokens: int) -> dict[str, Any]:
    """A mock response that used all of its worst case (what was reserved is what is charged)."""
    p = prompt_tokens()
    return {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "length", "index": 0}],
            "usage": {"prompt_tokens": p, "completion_tokens": max_tokens, "total_tokens": p + max_tokens},
            "model": "gpt-4o"}


def spent(tx: api.Exchange) -> Decimal:
    return tx.limits("claude").hourly.used


async def proxy_request(hook: TokenExchangeLogger, key: UserAPIKeyAuth, data: dict[str, Any],
                        mock: Any) -> tuple[str, Any]:
    """What the proxy does around one request: pre-call hook, the call, the success or failure hook."""
    try:
        data = await hook.async_pre_call_hook(user_api_key_dict=key, cache=None, data=data, call_type="completion")
    except Exception as e:  # noqa: BLE001  (the proxy turns it into the HTTP response)
        return "refused", e
    try:
        response = await litellm.acompletion(**data, mock_response=mock)
    except Exception as e:  # noqa: BLE001  (the proxy calls its failure hook)
        await hook.async_post_call_failure_hook(request_data=data, original_exception=e, user_api_key_dict=key)
        return "failed", data
    await hook.async_post_call_success_hook(data=data, user_api_key_dict=key, response=response)
    return "ok", data


def key(alias: str | None = "claude") -> UserAPIKeyAuth:
    return UserAPIKeyAuth(key_alias=alias)


# --- the proxy ------------------------------------------------------------------------------------
def test_proxy_reserves_the_worst_case_then_settles_the_reported_usage(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, "")
    data = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 1000}
    out = asyncio.run(hook.async_pre_call_hook(user_api_key_dict=key(), cache=None, data=data,
                                               call_type="completion"))
    rid = out["metadata"][RESERVATION_KEY]
    held = tx.reservation(rid)
    assert (held.state, held.agent, held.model, held.max_tokens) == ("open", "claude", "claude-sonnet",
                                                                     prompt_tokens() + 1000)
    assert held.held == tx.price("claude-sonnet", prompt_tokens() + 1000)
    response = litellm.completion(**out, mock_response="four words of reply")  # usage 10 in, 20 out
    asyncio.run(hook.async_post_call_success_hook(data=out, user_api_key_dict=key(), response=response))
    done = tx.reservation(rid)
    assert (done.state, done.tokens, done.cost) == ("settled", 30, tx.price("claude-sonnet", 30))
    assert tx.balance("claude") == 10000 - done.cost


def test_proxy_refuses_with_429_the_reason_and_retry_after(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock)
    tx.spend("claude", "claude-sonnet", 3000, id="earlier")  # 9 of the hourly 10
    clock.advance(minutes=15)
    before = (tx.home / "ledger.toml").read_bytes()
    status, err = asyncio.run(proxy_request(hook, key(), {"model": "gpt-4o", "messages": MESSAGES,
                                                           "max_tokens": 1000}, "x"))
    assert status == "refused"
    assert getattr(err, "status_code", None) == 429
    need = tx.price("claude-sonnet", prompt_tokens() + 1000)
    assert getattr(err, "detail", None) == (f"Hourly limit reached (9.0/10 used, need {need}); "
                                             "enough frees up at 2026-01-01T13:00:00Z (in 45m 00s)")
    assert getattr(err, "headers", None) == {"Retry-After": "2700"}
    assert (tx.home / "ledger.toml").read_bytes() == before


@pytest.mark.parametrize("alias,metadata,model,msg", [
    (None, {}, "gpt-4o", "no agent for this request"),
    ("ghost", {}, "gpt-4o", "unknown agent 'ghost'"),
    ("claude", {}, "mistral-large", "no price for model 'mistral-large'"),
])
def test_proxy_requests_it_cannot_attribute_or_price_are_400(tmp_path: Path, clock: Clock, alias: str | None,
                                                             metadata: dict[str, str], model: str, msg: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKEN_EXCHANGE_AGENT", raising=False)
    _, hook = make(tmp_path, clock)
    status, err = asyncio.run(proxy_request(hook, key(alias), {"model": model, "messages": MESSAGES,
                                                                "metadata": metadata}, "x"))
    assert status == "refused" and getattr(err, "status_code", None) == 400 and msg in str(err.detail)


def test_the_agent_is_the_keys_alias_else_the_metadata(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, "")
    data = {"model": "gpt-4o", "messages": MESSAGES, "metadata": {"token_exchange_agent": "zero"}}
    assert hook.plan(dict(data), key_alias="claude").agent == "claude"  # a client cannot pick who pays
    assert hook.plan(dict(data)).agent == "zero"
    assert hook.plan({"model": "gpt-4o", "messages": MESSAGES, "metadata": {"agent": "spark"}}).agent == "spark"
    default = TokenExchangeLogger(tx, agent="lambda")
    assert default.plan({"model": "claude-opus", "messages": MESSAGES}).agent == "lambda"


def test_model_names_map_to_the_price_table(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, "")
    assert hook.price_model("gpt-4o") == "claude-sonnet"
    assert hook.price_model("anthropic/claude-opus-4-1") == "claude-opus"  # pattern
    assert hook.price_model("gemini-pro") == "gemini-pro"  # the price table's own name
    assert hook.price_model("ollama/llama3.2") == "llama3.2"  # after the provider prefix
    with pytest.raises(UserError, match="unknown model 'gpt-5'"):
        TokenExchangeLogger(tx, models={"gpt-4o-mini": "gpt-5"}).price_model("gpt-4o-mini")


def test_a_request_without_max_tokens_gets_the_default_written_in(tmp_path: Path, clock: Clock) -> None:
    _, hook = make(tmp_path, clock, "", default_max_tokens=256)
    data: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES}
    plan = hook.plan(data, key_alias="claude")
    assert data["max_tokens"] == 256 and plan.tokens == prompt_tokens() + 256


def test_the_prompt_estimate_counts_tools_and_survives_a_failing_tokenizer(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, "")
    tool = {"type": "function", "function": {"name": "lookup", "description": "Find a symbol in the repository",
                                             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    plain = hook.plan({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 10}, key_alias="claude")
    with_tools = hook.plan({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 10, "tools": [tool]},
                           key_alias="claude")
    assert plain.tokens == prompt_tokens() + 10 < with_tools.tokens

    def broken(model: str, request: Any) -> int:
        raise ValueError("no tokenizer for this")

    odd = TokenExchangeLogger(tx, models=MODELS, count_tokens=broken)
    plan = odd.plan({"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 10}, key_alias="claude")
    assert plan.tokens == len(str(MESSAGES)) + 10  # characters: never fewer than tokens


def test_the_final_failure_voids_one_failed_attempt_does_not(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, "")
    status, data = asyncio.run(proxy_request(hook, key(), {"model": "gpt-4o", "messages": MESSAGES,
                                                            "max_tokens": 100}, Exception("provider down")))
    assert status == "failed"
    assert tx.reservation(data["metadata"][RESERVATION_KEY]).state == "voided"
    assert tx.balance("claude") == 10000
    rid = tx.reserve("claude", "claude-sonnet", 100).id
    hook.log_failure_event({"litellm_params": {"metadata": {RESERVATION_KEY: rid}}}, None, None, None)
    assert tx.reservation(rid).state == "open"  # the router may still retry it


def test_usage_above_the_estimate_is_charged_in_full(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, "")
    data = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 10}
    big = {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop", "index": 0}],
           "usage": {"prompt_tokens": 5000, "completion_tokens": 10, "total_tokens": 5010}, "model": "gpt-4o"}
    status, out = asyncio.run(proxy_request(hook, key(), data, big))
    info = tx.reservation(out["metadata"][RESERVATION_KEY])
    assert status == "ok" and info.state == "settled" and info.tokens == 5010
    assert info.cost == tx.price("claude-sonnet", 5010) and info.over == info.cost - info.held


def test_the_success_event_settles_a_tagged_call(tmp_path: Path, clock: Clock) -> None:
    """For streams the proxy calls no post-call success hook: the logging event settles."""
    tx, hook = make(tmp_path, clock, "")
    litellm.callbacks = [hook]
    rid = tx.reserve("claude", "claude-sonnet", 1000).id

    async def call() -> None:
        await litellm.acompletion(model="gpt-4o", messages=MESSAGES, mock_response="hi", max_tokens=50,
                                  metadata={RESERVATION_KEY: rid})
        for _ in range(600):  # the event runs as a background task: wait for its outcome, not for a time
            if tx.reservation(rid).state != "open":
                return
            await asyncio.sleep(0.05)

    asyncio.run(call())
    info = tx.reservation(rid)
    assert (info.state, info.tokens) == ("settled", 30)


# --- the SDK -----------------------------------------------------------------------------------------
class Calls(CustomLogger):
    """Counts the calls LiteLLM really started."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self.started += 1


def test_guarded_completion_settles_and_refuses_before_sending(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, agent="claude")
    calls = Calls()
    litellm.callbacks = [calls]
    r = guarded_completion(hook, model="gpt-4o", messages=MESSAGES, max_tokens=100, mock_response=full_usage(100))
    assert r.choices[0].message.content == "ok" and calls.started == 1
    cost = tx.price("claude-sonnet", prompt_tokens() + 100)
    assert spent(tx) == cost
    with pytest.raises(LimitRefused, match="Hourly limit reached"):
        guarded_completion(hook, model="gpt-4o", messages=MESSAGES, max_tokens=100_000, mock_response="x")
    assert calls.started == 1 and spent(tx) == cost  # nothing was sent, nothing charged
    with pytest.raises(Exception, match="provider down"):
        guarded_completion(hook, model="gpt-4o", messages=MESSAGES, max_tokens=100,
                           mock_response=Exception("provider down"))
    assert tx.wallet("claude").reserved == 0 and spent(tx) == cost  # voided
    with pytest.raises(UserError, match="does not stream"):
        guarded_completion(hook, model="gpt-4o", messages=MESSAGES, stream=True)


def test_aguarded_completion(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, "")
    r = asyncio.run(aguarded_completion(hook, agent="builder", model="gpt-4o", messages=MESSAGES, max_tokens=64,
                                        mock_response="hello"))
    assert r.usage.total_tokens == 30
    assert tx.limits("builder").hourly.used == tx.price("claude-sonnet", 30)
    with pytest.raises(Exception, match="boom"):
        asyncio.run(aguarded_completion(hook, agent="builder", model="gpt-4o", messages=MESSAGES, max_tokens=64,
                                        mock_response=Exception("boom")))
    assert tx.wallet("builder").reserved == 0


# --- 32 requests racing an hourly limit ----------------------------------------------------------------
MAX = 100


def test_32_concurrent_proxy_requests_never_overspend_the_hourly_limit(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock)
    litellm.callbacks = [hook]  # the success event races the success hook to settle: once, either way
    cost = tx.price("claude-sonnet", prompt_tokens() + MAX)

    async def race() -> list[tuple[str, Any]]:
        return await asyncio.gather(*(proxy_request(hook, key(), {"model": "gpt-4o", "messages": MESSAGES,
                                                                  "max_tokens": MAX}, full_usage(MAX))
                                      for _ in range(32)))

    t0 = time.perf_counter()
    results = asyncio.run(race())
    elapsed = time.perf_counter() - t0
    ok = [d for s, d in results if s == "ok"]
    refused = [e for s, e in results if s == "refused"]
    assert len(ok) + len(refused) == 32 and all(getattr(e, "status_code", None) == 429 for e in refused)
    total = spent(tx)
    assert total <= 10 and total == len(ok) * cost  # never above the limit ...
    assert total > 10 - cost  # ... and within one request of it
    assert all(tx.reservation(d["metadata"][RESERVATION_KEY]).state == "settled" for d in ok)
    print(f"\n32 proxy requests: {len(ok)} served, {len(refused)} refused (429), spent {total}/10 "
          f"(one request {cost}) in {elapsed:.2f} s")


def test_32_threads_through_the_sdk_wrapper_never_overspend(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock, agent="claude")
    cost = tx.price("claude-sonnet", prompt_tokens() + MAX)
    start = threading.Barrier(32)
    outcomes: list[str] = []

    def one() -> None:
        start.wait()
        try:
            guarded_completion(hook, model="gpt-4o", messages=MESSAGES, max_tokens=MAX, mock_response=full_usage(MAX))
            outcomes.append("ok")
        except LimitRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=one) for _ in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    total = spent(tx)
    assert len(outcomes) == 32 and total == outcomes.count("ok") * cost
    assert 10 - cost < total <= 10
    assert tx.wallet("claude").reserved == 0


def test_racing_requests_that_use_less_than_the_worst_case_never_overspend(tmp_path: Path, clock: Clock) -> None:
    tx, hook = make(tmp_path, clock)

    async def race() -> list[tuple[str, Any]]:  # mock usage 10 + 20 tokens, reserved 9 + 1000 each
        return await asyncio.gather(*(proxy_request(hook, key(), {"model": "gpt-4o", "messages": MESSAGES,
                                                                  "max_tokens": 1000}, "short") for _ in range(32)))

    results = asyncio.run(race())
    served = sum(1 for s, _ in results if s == "ok")
    assert 0 < served < 32 and spent(tx) == served * tx.price("claude-sonnet", 30) <= 10
    assert tx.wallet("claude").reserved == 0
