"""Does a sender's domain exist in the DNS? Against backscatter from forged senders.

An acknowledgement to a forged address is spam we sent. When enabled, a
domain with no MX and no A/AAAA record gets no acknowledgement. Answers are
cached for a few minutes; a DNS failure (timeout, SERVFAIL) counts as "no",
since the safe side of doubt is silence.
"""

from __future__ import annotations

import time

import dns.asyncresolver
import dns.exception
import dns.resolver
from pydantic import Field

from mailflow.config import Model


class DnsOptions(Model):
    nameservers: tuple[str, ...] = ()  # empty: the system's resolv.conf
    port: int = Field(53, ge=1, le=65535)
    timeout: float = Field(2.0, gt=0, le=30)
    cache_seconds: float = Field(300.0, ge=0)


class DomainChecker:
    """Answers "does this domain receive mail?" with MX, then A/AAAA records."""

    def __init__(self, options: DnsOptions) -> None:
        self.options = options
        if options.nameservers:
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = list(options.nameservers)
            self.resolver.port = options.port
        else:
            self.resolver = dns.asyncresolver.Resolver()
        self.resolver.lifetime = options.timeout
        self._cache: dict[str, tuple[float, bool, str]] = {}

    async def resolves(self, domain: str) -> tuple[bool, str]:
        """(True, "") when the domain has MX or address records; else (False, why)."""
        domain = domain.lower().rstrip(".")
        now = time.monotonic()
        cached = self._cache.get(domain)
        if cached and now - cached[0] < self.options.cache_seconds:
            return cached[1], cached[2]
        answer = await self._lookup(domain)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[domain] = (now, *answer)
        return answer

    async def _lookup(self, domain: str) -> tuple[bool, str]:
        if not domain or "." not in domain:
            return False, "not a domain name"
        failure = "no MX or address record"
        for rdtype in ("MX", "A", "AAAA"):
            try:
                await self.resolver.resolve(domain, rdtype)
                return True, ""
            except dns.resolver.NXDOMAIN:
                return False, "domain does not exist"
            except dns.resolver.NoAnswer:
                continue
            except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
                failure = f"DNS lookup failed ({type(exc).__name__})"
            except (dns.exception.DNSException, ValueError):
                # EmptyLabel, LabelTooLong, NameTooLong, IDNA errors: the sender chose
                # the name; it must not make the stage (and so the message) fail
                return False, "not a domain name"
        return False, failure
