"""Circuit breaker behaviour, driven by an injected clock (no test sleeps)."""

from __future__ import annotations

import pytest

from threatintel.errors import (
    AuthenticationFailed,
    CircuitOpen,
    ConnectionFailed,
    ProviderTimeout,
    UpstreamError,
)
from threatintel.resilience import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fail_with(breaker: CircuitBreaker, exc: Exception) -> None:
    with pytest.raises(type(exc)):
        async with breaker:
            raise exc


async def test_opens_after_threshold_consecutive_failures() -> None:
    """Three tripping failures in a row open a breaker with threshold 3; calls then fail fast."""
    clock = FakeClock()
    breaker = CircuitBreaker("vt", failure_threshold=3, reset_after=30, clock=clock)
    for exc in (ProviderTimeout("vt", "t"), ConnectionFailed("vt", "c")):
        await fail_with(breaker, exc)
        assert breaker.state is BreakerState.CLOSED
    await fail_with(breaker, UpstreamError("vt", "5xx"))
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as caught:
        async with breaker:
            pytest.fail("an open breaker must not run the call")
    assert caught.value.retry_after == pytest.approx(30)


async def test_success_resets_the_failure_count() -> None:
    """A success between failures means the run of failures starts again."""
    breaker = CircuitBreaker("vt", failure_threshold=2, clock=FakeClock())
    await fail_with(breaker, ProviderTimeout("vt", "t"))
    async with breaker:
        pass
    await fail_with(breaker, ProviderTimeout("vt", "t"))
    assert breaker.state is BreakerState.CLOSED


async def test_non_health_errors_do_not_trip() -> None:
    """A rejected key says nothing about the provider's health and never opens the breaker."""
    breaker = CircuitBreaker("vt", failure_threshold=1, clock=FakeClock())
    await fail_with(breaker, AuthenticationFailed("vt", "bad key"))
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_lets_one_probe_and_closes_on_success() -> None:
    """After the cool-down one probe passes, concurrent calls still fail fast, success closes."""
    clock = FakeClock()
    breaker = CircuitBreaker("vt", failure_threshold=1, reset_after=10, clock=clock)
    await fail_with(breaker, ProviderTimeout("vt", "t"))
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    async with breaker:
        with pytest.raises(CircuitOpen):
            async with breaker:
                pass
    assert breaker.state is BreakerState.CLOSED


async def test_failed_probe_reopens_for_a_full_cool_down() -> None:
    """A failing probe re-opens the breaker from the probe's time."""
    clock = FakeClock()
    breaker = CircuitBreaker("vt", failure_threshold=1, reset_after=10, clock=clock)
    await fail_with(breaker, ProviderTimeout("vt", "t"))
    clock.now += 15
    await fail_with(breaker, UpstreamError("vt", "5xx"))
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after == pytest.approx(10)


async def test_late_results_of_calls_in_flight_do_not_move_an_open_breaker() -> None:
    """A call admitted before the breaker opened neither closes nor re-opens it when it ends."""
    clock = FakeClock()
    breaker = CircuitBreaker("vt", failure_threshold=1, reset_after=10, clock=clock)
    async with breaker:  # admitted while closed ...
        await fail_with(breaker, ProviderTimeout("vt", "t"))  # ... meanwhile another fails
        assert breaker.state is BreakerState.OPEN
    assert breaker.state is BreakerState.OPEN  # ... and its late success changes nothing
    fresh = CircuitBreaker("vt", failure_threshold=1, reset_after=10, clock=clock)
    with pytest.raises(ProviderTimeout):
        async with fresh:  # admitted while closed ...
            await fail_with(fresh, ProviderTimeout("vt", "t"))
            clock.now += 5
            raise ProviderTimeout("vt", "late")  # ... a late failure does not extend it
    assert fresh.retry_after == pytest.approx(5)


def test_invalid_parameters_are_refused() -> None:
    """A threshold below one or a non-positive cool-down is a programming error."""
    with pytest.raises(ValueError):
        CircuitBreaker("vt", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("vt", reset_after=0)


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
