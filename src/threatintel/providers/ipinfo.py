"""IPinfo legacy API `/{ip}/json` (contracts §4). The token goes in a header, never the URL."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

import httpx

from threatintel.errors import AuthenticationFailed, BadRequest, UpstreamError
from threatintel.models import IP_TYPES, Geo, Indicator, IndicatorType, SourceResult, SourceStatus
from threatintel.providers.base import Call, HttpProvider, Json, parse_retry_after, quota_error
from threatintel.providers.facts import QuotaWindow, Role
from threatintel.providers.values import as_asn, as_country, as_str
from threatintel.quota.base import Window


class IPinfo(HttpProvider):
    name: ClassVar[str] = "ipinfo"
    title: ClassVar[str] = "IPinfo"
    supports: ClassVar[frozenset[IndicatorType]] = IP_TYPES
    # Works without a token in a limited capacity (contracts §4.1).
    requires_key: ClassVar[bool] = False
    # Counted per month with a token, per day without one.
    windows: ClassVar[tuple[QuotaWindow, ...]] = (
        QuotaWindow(Window.per_month, "ipinfo_rate_limit"),
    )
    anonymous_windows: ClassVar[tuple[QuotaWindow, ...]] = (
        QuotaWindow(Window.per_day, "ipinfo_anonymous_daily_limit"),
    )
    # Who runs the address: known-good network signals, never malice (findings.network).
    role: ClassVar[Role] = "context"

    def request(self, indicator: Indicator, api_key: str | None) -> Call:
        headers = {"accept": "application/json"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        return Call("GET", f"/{indicator.value}/json", headers=headers)

    async def lookup(self, indicator: Indicator, api_key: str | None) -> SourceResult:
        # Like the official SDK, answer bogons locally (contracts §4.3): they spend no quota.
        if not ipaddress.ip_address(indicator.value).is_global:
            return self._bogon(indicator)
        return await super().lookup(indicator, api_key)

    def _bogon(self, indicator: Indicator) -> SourceResult:
        return self.result(
            SourceStatus.OK,
            indicator,
            message="bogon address: not routed on the internet",
            tags=["bogon"],
        )

    def link(self, indicator: Indicator) -> str | None:
        return f"https://ipinfo.io/{indicator.value}"

    def check(self, indicator: Indicator, response: httpx.Response) -> SourceResult | None:
        status = response.status_code
        if status == 404:
            raise BadRequest(
                self.name, "IPinfo says this is not a valid IP address", status_code=404
            )
        if status == 429:
            # IPinfo's limits are daily (unauthenticated) or monthly (free token): long windows.
            raise quota_error(
                self.name,
                "IPinfo request quota exhausted",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                reset_at=None,
                long_window=True,
            )
        return super().check(indicator, response)

    def parse(self, indicator: Indicator, body: Json) -> SourceResult:
        error = body.get("error")
        if error is not None:
            # A wrong token has been seen with an `error` body under several statuses, 200
            # included (contracts §4.4): any `error` key is a failure.
            title = as_str(error.get("title")) if isinstance(error, dict) else None
            if title and "token" in title.lower():
                raise AuthenticationFailed(self.name, "IPinfo rejected the token")
            raise UpstreamError(self.name, "IPinfo answered with an error")
        if body.get("bogon") is True:
            return self._bogon(indicator)
        asn, org = _split_org(as_str(body.get("org")))
        country = as_country(body.get("country"))
        if "country_code" in body:
            # The Lite shape (api.ipinfo.io/lite) names fields differently (contracts §4.1).
            country = as_country(body.get("country_code"))
            asn, _ = _split_org(as_str(body.get("asn")))
            org = as_str(body.get("as_name"))
        lat = lon = None
        loc = as_str(body.get("loc"))
        if loc and "," in loc:
            first, _, second = loc.partition(",")
            try:
                lat, lon = float(first), float(second)
            except ValueError:
                lat = lon = None
        return self.result(
            SourceStatus.OK,
            indicator,
            geo=Geo(
                city=as_str(body.get("city")),
                region=as_str(body.get("region")),
                country=country,
                asn=asn,
                organization=org,
                hostname=as_str(body.get("hostname")),
                latitude=lat,
                longitude=lon,
                anycast=body.get("anycast") is True,
            ),
        )


def _split_org(org: str | None) -> tuple[int | None, str | None]:
    """`"AS14618 Amazon.com, Inc."` → (14618, "Amazon.com, Inc.")."""
    if not org:
        return None, None
    head, _, rest = org.partition(" ")
    if head[:2].upper() == "AS" and (asn := as_asn(head)) is not None:
        return asn, rest or None
    return None, org
