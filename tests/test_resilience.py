"""Circuit breaker and retry policy behaviour, driven by an injected clock (no test sleeps)."""

from __future__ import annotations

import asyncio

import pytest

from threatintel.clock import VirtualClock
from threatintel.errors import (
    AuthenticationFailed,
    CircuitOpen,
    ConnectionFailed,
    ProviderTimeout,
    UpstreamError,
)
from threatintel.resilience import BreakerState, CircuitBreaker


async def fail_with(breaker: CircuitBreaker, exc: Exception) -> None:
    with pytest.raises(type(exc)):
        async with breaker:
            raise exc


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker:
        pass


async def lookup(breaker: CircuitBreaker, *outcomes: Exception | None) -> None:
    """One lookup in its own task: its attempts in order (None is a success)."""

    async def attempts() -> None:
        for outcome in outcomes:
            if outcome is None:
                await succeed(breaker)
            else:
                await fail_with(breaker, outcome)

    await asyncio.create_task(attempts())


def timeout() -> ProviderTimeout:
    return ProviderTimeout("vt", "t")


async def test_a_dead_provider_opens_after_min_calls_failures() -> None:
    """Every call failing: the breaker opens at the min_calls-th failure, then fails fast."""
    breaker = CircuitBreaker("vt", min_calls=3, first_reset_after=5, clock=VirtualClock())
    for exc in (timeout(), ConnectionFailed("vt", "c")):
        await fail_with(breaker, exc)
        assert breaker.state is BreakerState.CLOSED
    await fail_with(breaker, UpstreamError("vt", "5xx"))
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as caught:
        async with breaker:
            pytest.fail("an open breaker must not run the call")
    assert caught.value.retry_after == pytest.approx(5)


async def test_it_opens_on_the_failure_rate_not_on_a_run_of_failures() -> None:
    """Failures below the rate never open it, however many in a row; reaching the rate does."""
    breaker = CircuitBreaker("vt", failure_rate=0.5, min_calls=4, clock=VirtualClock())
    for _ in range(6):
        await lookup(breaker, None)
    for _ in range(5):  # five failed lookups in a row: 5 of 11 calls, under half
        await lookup(breaker, timeout())
    assert breaker.state is BreakerState.CLOSED
    await lookup(breaker, timeout())  # 6 of 12: half
    assert breaker.state is BreakerState.OPEN


async def test_a_lookup_that_succeeds_after_retries_counts_as_one_success() -> None:
    """The failed attempts of a lookup that then succeeds are struck out of the window."""
    breaker = CircuitBreaker("vt", failure_rate=0.5, min_calls=4, clock=VirtualClock())
    for _ in range(10):  # a failure then a success, ten times: half the calls failed
        await lookup(breaker, timeout(), None)
    assert breaker.state is BreakerState.CLOSED
    # The window now holds ten successes: ten failures more are needed to reach half.
    for _ in range(9):
        await lookup(breaker, timeout())
    assert breaker.state is BreakerState.CLOSED
    await lookup(breaker, timeout())
    assert breaker.state is BreakerState.OPEN


async def test_failures_of_a_lookup_in_flight_count_until_it_succeeds() -> None:
    """A dead provider is seen from attempts, before any lookup has given up."""
    breaker = CircuitBreaker("vt", min_calls=3, clock=VirtualClock())
    await lookup(breaker, timeout(), timeout(), timeout())
    assert breaker.state is BreakerState.OPEN


async def test_old_outcomes_leave_the_window() -> None:
    """Outcomes older than the window are forgotten: old failures cannot open it later."""
    clock = VirtualClock()
    breaker = CircuitBreaker("vt", min_calls=3, window=60, clock=clock)
    await lookup(breaker, timeout())
    await lookup(breaker, timeout())
    clock.advance(61)
    await lookup(breaker, timeout())
    assert breaker.state is BreakerState.CLOSED


async def test_non_health_errors_do_not_trip() -> None:
    """A rejected key says nothing about the provider's health and never opens the breaker."""
    breaker = CircuitBreaker("vt", min_calls=1, clock=VirtualClock())
    await fail_with(breaker, AuthenticationFailed("vt", "bad key"))
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_lets_one_probe_and_closes_on_success() -> None:
    """After the cool-down one probe passes, concurrent calls still fail fast, success closes."""
    clock = VirtualClock()
    breaker = CircuitBreaker("vt", min_calls=1, first_reset_after=10, clock=clock)
    await fail_with(breaker, timeout())
    clock.advance(10)
    assert breaker.state is BreakerState.HALF_OPEN
    async with breaker:
        with pytest.raises(CircuitOpen):
            async with breaker:
                pass
    assert breaker.state is BreakerState.CLOSED


async def test_the_cool_down_doubles_after_failed_probes_up_to_reset_after() -> None:
    """Failed probes re-open it for 1, 2, 4 ... seconds, never more than reset_after; a
    successful probe starts the sequence again."""
    clock = VirtualClock()
    breaker = CircuitBreaker("vt", min_calls=1, first_reset_after=1, reset_after=5, clock=clock)
    await fail_with(breaker, timeout())
    cool_downs = []
    for _ in range(5):
        cool_downs.append(breaker.retry_after)
        clock.advance(breaker.retry_after)
        await fail_with(breaker, UpstreamError("vt", "5xx"))  # the probe fails
    assert cool_downs == [1, 2, 4, 5, 5]
    clock.advance(breaker.retry_after)
    await succeed(breaker)
    assert breaker.state is BreakerState.CLOSED
    await fail_with(breaker, timeout())
    assert breaker.retry_after == pytest.approx(1)


async def test_late_results_of_calls_in_flight_do_not_move_an_open_breaker() -> None:
    """A call admitted before the breaker opened neither closes nor re-opens it when it ends."""
    clock = VirtualClock()
    breaker = CircuitBreaker("vt", min_calls=1, first_reset_after=10, clock=clock)
    async with breaker:  # admitted while closed ...
        await lookup(breaker, timeout())  # ... meanwhile another lookup fails
        assert breaker.state is BreakerState.OPEN
    assert breaker.state is BreakerState.OPEN  # ... and its late success changes nothing
    fresh = CircuitBreaker("vt", min_calls=1, first_reset_after=10, clock=clock)
    with pytest.raises(ProviderTimeout):
        async with fresh:  # admitted while closed ...
            await lookup(fresh, timeout())
            clock.advance(5)
            raise ProviderTimeout("vt", "late")  # ... a late failure does not extend it
    assert fresh.retry_after == pytest.approx(5)


async def test_calls_admitted_before_opening_reach_half_open_as_one_probe() -> None:
    """Lookups let in while closed that reach check() once the cool-down is over (they waited
    for quota together): the first becomes the probe, the others are refused, and the probe's
    failure re-opens the breaker with a longer cool-down."""
    clock = VirtualClock()
    breaker = CircuitBreaker("vt", min_calls=1, first_reset_after=1, clock=clock)
    gate = asyncio.Event()
    checked: list[str] = []

    async def admitted(name: str) -> None:
        async with breaker:  # admitted while closed, then waits (for a quota slot, say)
            await gate.wait()
            try:
                breaker.check()
            except CircuitOpen:
                checked.append(f"{name} refused")
                raise
            checked.append(f"{name} probe")
            raise ProviderTimeout("vt", "still down")

    waiting = [asyncio.create_task(admitted(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0)
    await lookup(breaker, timeout())  # meanwhile the provider fails: open
    clock.advance(1)  # the cool-down is over: half-open
    gate.set()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert checked == ["a probe", "b refused", "c refused"]
    assert breaker.state is BreakerState.OPEN and breaker.retry_after == pytest.approx(2)


async def test_a_refused_caller_waits_for_a_probe_due_soon_and_learns_its_outcome() -> None:
    """wait() sleeps until the probe may go, then waits for the probe in flight to settle."""
    clock = VirtualClock()
    breaker = CircuitBreaker("vt", min_calls=1, first_reset_after=2, clock=clock)
    await fail_with(breaker, timeout())
    assert await breaker.wait(3) is True  # slept the 2 s cool-down: a probe may go
    assert clock.now == pytest.approx(1_700_000_002)
    release = asyncio.Event()

    async def probe() -> None:
        async with breaker:
            await release.wait()

    prober = asyncio.create_task(probe())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(breaker.wait(3))
    await asyncio.sleep(0)
    assert not waiter.done()  # the probe is in flight
    release.set()
    await prober
    assert await waiter is True
    assert breaker.state is BreakerState.CLOSED


async def test_wait_gives_up_at_once_when_the_probe_is_too_far_off() -> None:
    """A probe due later than the caller can wait means circuit_open now, without sleeping."""
    clock = VirtualClock()
    breaker = CircuitBreaker("vt", min_calls=1, first_reset_after=30, clock=clock)
    await fail_with(breaker, timeout())
    assert await breaker.wait(5) is False
    assert clock.now == 1_700_000_000
    assert await CircuitBreaker("otx", clock=clock).wait(0) is True  # closed: go


def test_invalid_parameters_are_refused() -> None:
    """A rate outside (0, 1], fewer than one call or a non-positive cool-down is a bug."""
    for bad in ({"failure_rate": 0}, {"failure_rate": 1.5}, {"min_calls": 0}, {"reset_after": 0}):
        with pytest.raises(ValueError):
            CircuitBreaker("vt", **bad)


# --- retry policy --------------------------------------------------------------------------

from threatintel.errors import BadRequest, QuotaExhausted, RateLimited  # noqa: E402
from threatintel.resilience import RetryPolicy  # noqa: E402


@pytest.mark.parametrize(
    "exc",
    [
        ProviderTimeout("vt", "t"),
        ConnectionFailed("vt", "c"),
        UpstreamError("vt", "503", status_code=503),
        UpstreamError("vt", "malformed JSON"),
    ],
)
def test_transient_failures_are_retried_with_full_jitter(exc: Exception) -> None:
    """Timeouts, connection errors, 5xx and unreadable bodies back off exponentially with jitter."""
    top = RetryPolicy(3, backoff_base=0.5, backoff_cap=20, random=lambda: 1.0)
    bottom = RetryPolicy(3, backoff_base=0.5, backoff_cap=20, random=lambda: 0.0)
    assert [top.wait(exc, attempt) for attempt in range(3)] == [0.5, 1.0, 2.0]
    assert bottom.wait(exc, 0) == 0.0
    assert top.wait(exc, 3) is None


@pytest.mark.parametrize(
    "exc",
    [
        BadRequest("vt", "400", status_code=400),
        BadRequest("ab", "422", status_code=422),
        AuthenticationFailed("vt", "401", status_code=401),
        AuthenticationFailed("otx", "403", status_code=403),
        UpstreamError("vt", "409", status_code=409),
        QuotaExhausted("vt", "day spent", retry_after=3600),
        CircuitOpen("vt", "open"),
    ],
)
def test_client_errors_and_long_quotas_are_never_retried(exc: Exception) -> None:
    """400/401/403/404/422, a spent daily quota and an open circuit are given up at once."""
    assert RetryPolicy(5).wait(exc, 0) is None


def test_short_429_waits_what_the_vendor_says() -> None:
    """A 429 with a short Retry-After waits exactly that; a long one is not retried inline."""
    policy = RetryPolicy(3, max_retry_after=60, random=lambda: 1.0)
    assert policy.wait(RateLimited("vt", "slow down", retry_after=7.0), 0) == 7.0
    assert policy.wait(RateLimited("vt", "slow down", retry_after=600.0), 0) is None
    assert policy.wait(RateLimited("vt", "slow down"), 1) == 1.0


def test_zero_retries_means_none() -> None:
    """MAX_RETRIES=0 gives up after the first attempt, whatever the error."""
    assert RetryPolicy(0).wait(ProviderTimeout("vt", "t"), 0) is None
    with pytest.raises(ValueError):
        RetryPolicy(-1)


def test_backoff_is_capped() -> None:
    """The exponential growth stops at the cap."""
    policy = RetryPolicy(20, backoff_base=1, backoff_cap=5, random=lambda: 1.0)
    assert policy.backoff(10) == 5
