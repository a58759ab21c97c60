"""Admin calls through the root: routed to the leaves that own the ads they name, and answered OK
only once every one of those leaves has logged the change (each leaf fsyncs its change log
before it acknowledges, as a lone server does).

**Routing.** An ad id goes to its shard (``indexer.shards.shard_of``, the build's own rule);
campaign and advertiser ids go to every leaf: their ads are spread over the shards, and a
campaign paused now must also pause its ads upserted later, on whichever shard they land.

**Two phases** for Pause, Resume and Delete. First every leaf involved is asked which ids it
does not know (``LeafService.LookupIds``): an ad unknown to its shard, or a campaign or
advertiser unknown to every shard, fails ``NOT_FOUND`` and a leaf that does not answer fails
``UNAVAILABLE``; either way nothing has changed. Then the change goes to those leaves at once.
Should one of them fail now, the others have applied it: the call fails, naming the shards that
applied it. Every admin call is idempotent (Upsert replaces by id), so the answer is to retry.
Another admin call may change the same ids between the two phases; like two calls racing on
one server, the later one wins.

**Upsert** routes each ad by id (no lookup: an upsert inserts or replaces). A leaf refusing a
field of its part names ``ads[j]`` of that part; the root maps it back to the caller's index.

**Answers.** ``ads_changed``, ``inserted`` and ``updated`` are summed over the leaves;
``sequence`` is the highest of their change-log sequence numbers (each leaf numbers its own
log; the root logs each); ``index_version`` is the pinned version.

**Reload** makes every leaf load the newest published version (held beside the served one),
then the root polls them and, once all hold it, pins and switches (``retrieval.root_leaves``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from indexer.shards import shard_of
from retrieval.errors import InvalidArgument, NotFound
from retrieval.root import LeafError
from retrieval.root_leaves import LeafSet
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

logger = logging.getLogger(__name__)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_TIMEOUT_S = 60.0  # an upsert of text is embedded by the leaf: seconds, not ms
_AD_INDEX = re.compile(r"^ads\[(\d+)\]")


class RootAdmin(retrieval_pb2_grpc.AdminServiceServicer):
    """AdminService over the leaves (module docstring)."""

    def __init__(self, leaves: LeafSet, metadata: tuple[tuple[str, str], ...]):
        self._leaves = leaves
        self._metadata = metadata

    def _route(self, ad_ids: Sequence[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for ad_id in ad_ids:
            out.setdefault(shard_of(ad_id, self._leaves.count), []).append(ad_id)
        return out

    async def _fan(
        self, calls: Mapping[int, Awaitable[T]]
    ) -> tuple[dict[int, T], dict[int, grpc.aio.AioRpcError]]:
        """Await one call per shard; (answers, failures) by shard."""
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        answers: dict[int, T] = {}
        failures: dict[int, grpc.aio.AioRpcError] = {}
        for shard, result in zip(calls, results, strict=True):
            if isinstance(result, grpc.aio.AioRpcError):
                failures[shard] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                answers[shard] = result
        return answers, failures

    def _describe(
        self,
        failures: Mapping[int, grpc.aio.AioRpcError],
        rows: Mapping[int, Sequence[int]] | None = None,
    ) -> str:
        """Each failure's message first (it names the field), then where it came from."""
        out = []
        for s, e in sorted(failures.items()):
            details = e.details() or ""
            if rows is not None:
                details = _caller_index(details, rows[s])
            out.append(
                f"{details} (shard {s} at {self._leaves.leaves[s].address}: {e.code().name})"
            )
        return "; ".join(out)

    def _timeout(self, context: Context) -> float:
        remaining = context.time_remaining()
        return DEFAULT_TIMEOUT_S if remaining is None else max(remaining, 1e-3)

    async def _lookup(
        self, parts: Mapping[int, retrieval_pb2.EligibilityRequest], context: Context
    ) -> None:
        """Phase one: NOT_FOUND or UNAVAILABLE before anything changes."""
        leaves = self._leaves.leaves
        answers, failures = await self._fan(
            {
                s: leaves[s].leaf.LookupIds(part, timeout=self._timeout(context))
                for s, part in parts.items()
            }
        )
        if failures:
            raise LeafError(
                grpc.StatusCode.UNAVAILABLE, f"{self._describe(failures)}; nothing was changed"
            )
        unknown = [i for a in answers.values() for i in a.unknown_ad_ids]
        if unknown:
            raise NotFound(_unknown_message("ad_ids", unknown))
        for field, attr in (
            ("campaign_ids", "unknown_campaign_ids"),
            ("advertiser_ids", "unknown_advertiser_ids"),
        ):
            sets = [set(getattr(a, attr)) for a in answers.values()]
            everywhere = sorted(set.intersection(*sets)) if sets else []
            if everywhere:  # a group id is known when some shard holds one of its ads
                raise NotFound(_unknown_message(field, everywhere))

    async def _apply(
        self,
        method: str,
        parts: Mapping[int, Any],
        context: Context,
        rows: Mapping[int, Sequence[int]] | None = None,
    ) -> dict[int, Any]:
        """Phase two: the change on every leaf involved; all must acknowledge.

        Args:
            rows: for Upsert, the caller's index of each ad of each shard's part.
        """
        leaves = self._leaves.leaves
        answers, failures = await self._fan(
            {
                s: getattr(leaves[s].admin, method)(
                    part, timeout=self._timeout(context), metadata=self._metadata
                )
                for s, part in parts.items()
            }
        )
        if failures:
            applied = f"applied on shards {sorted(answers)}" if answers else "applied on no shard"
            raise LeafError(
                min(failures.items())[1].code(),
                f"{self._describe(failures, rows)}; {applied}; {method} is idempotent: retry",
            )
        for s, answer in sorted(answers.items()):
            logger.info("%s on shard %d: change #%d", method, s, answer.sequence)
        return answers

    async def _eligibility(
        self, method: str, request: retrieval_pb2.EligibilityRequest, context: Context
    ) -> retrieval_pb2.EligibilityResponse:
        if not (request.ad_ids or request.campaign_ids or request.advertiser_ids):
            raise InvalidArgument("ad_ids", "name at least one ad, campaign or advertiser")
        ads = self._route(request.ad_ids)
        groups = bool(request.campaign_ids or request.advertiser_ids)
        shards = range(self._leaves.count) if groups else sorted(ads)
        parts = {
            s: retrieval_pb2.EligibilityRequest(
                ad_ids=ads.get(s, []),
                campaign_ids=request.campaign_ids,
                advertiser_ids=request.advertiser_ids,
            )
            for s in shards
        }
        await self._lookup(parts, context)
        answers = await self._apply(method, parts, context)
        return retrieval_pb2.EligibilityResponse(
            ads_changed=sum(a.ads_changed for a in answers.values()),
            sequence=max(a.sequence for a in answers.values()),
            index_version=self._leaves.pinned or "",
        )

    async def Pause(
        self, request: retrieval_pb2.EligibilityRequest, context: Context
    ) -> retrieval_pb2.EligibilityResponse:
        return await self._eligibility("Pause", request, context)

    async def Resume(
        self, request: retrieval_pb2.EligibilityRequest, context: Context
    ) -> retrieval_pb2.EligibilityResponse:
        return await self._eligibility("Resume", request, context)

    async def Delete(
        self, request: retrieval_pb2.DeleteRequest, context: Context
    ) -> retrieval_pb2.EligibilityResponse:
        if not request.ad_ids:
            raise InvalidArgument("ad_ids", "name at least one ad")
        ads = self._route(request.ad_ids)
        await self._lookup(
            {s: retrieval_pb2.EligibilityRequest(ad_ids=i) for s, i in ads.items()}, context
        )
        answers = await self._apply(
            "Delete", {s: retrieval_pb2.DeleteRequest(ad_ids=i) for s, i in ads.items()}, context
        )
        return retrieval_pb2.EligibilityResponse(
            ads_changed=sum(a.ads_changed for a in answers.values()),
            sequence=max(a.sequence for a in answers.values()),
            index_version=self._leaves.pinned or "",
        )

    async def Upsert(
        self, request: retrieval_pb2.UpsertRequest, context: Context
    ) -> retrieval_pb2.UpsertResponse:
        if not request.ads:
            raise InvalidArgument("ads", "send at least one ad")
        rows: dict[int, list[int]] = {}
        for i, ad in enumerate(request.ads):
            if not ad.ad_id:
                raise InvalidArgument(f"ads[{i}].ad_id", "is required")
            rows.setdefault(shard_of(ad.ad_id, self._leaves.count), []).append(i)
        parts = {
            s: retrieval_pb2.UpsertRequest(ads=[request.ads[i] for i in r]) for s, r in rows.items()
        }
        answers = await self._apply("Upsert", parts, context, rows)
        return retrieval_pb2.UpsertResponse(
            inserted=sum(a.inserted for a in answers.values()),
            updated=sum(a.updated for a in answers.values()),
            sequence=max(a.sequence for a in answers.values()),
            index_version=self._leaves.pinned or "",
        )

    async def Reload(
        self, request: retrieval_pb2.ReloadRequest, context: Context
    ) -> retrieval_pb2.ReloadResponse:
        before = self._leaves.pinned
        leaves = self._leaves.leaves
        answers, failures = await self._fan(
            {
                leaf.shard: leaf.admin.Reload(
                    request, timeout=self._timeout(context), metadata=self._metadata
                )
                for leaf in leaves
            }
        )
        if failures:
            raise LeafError(
                next(iter(failures.values())).code(),
                f"{self._describe(failures)}; those leaves' watchers load it later, and the root "
                "switches once every leaf holds it",
            )
        await self._leaves.refresh()  # pin and switch now rather than at the next poll
        pinned = self._leaves.pinned or ""
        wanted = {a.index_version for a in answers.values()}
        if wanted != {pinned}:
            logger.warning("Reload: leaves loaded %s, calls pinned to %s", sorted(wanted), pinned)
        return retrieval_pb2.ReloadResponse(index_version=pinned, changed=pinned != before)

    async def SwitchVersion(
        self, request: retrieval_pb2.SwitchVersionRequest, context: Context
    ) -> retrieval_pb2.LeafStatus:
        raise LeafError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "a root switches its leaves itself once every leaf holds a version; use Reload",
        )


def _unknown_message(field: str, ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:10])
    more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
    return f"{field}: unknown {shown}{more}; nothing was changed"


def _caller_index(details: str, rows: Sequence[int]) -> str:
    """A leaf's ``ads[j]`` (index into its part of the call) as the caller's ``ads[i]``."""
    match = _AD_INDEX.match(details)
    if match is None or int(match.group(1)) >= len(rows):
        return details
    return f"ads[{rows[int(match.group(1))]}]{details[match.end() :]}"
