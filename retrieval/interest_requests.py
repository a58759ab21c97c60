"""Retrieve by several interests, by engaged pins, or for a context pin (docs/interests.md).

RetrievalService hands every request that does not carry ``user_embedding`` here:

- ``interests``: weighted embeddings, searched together (``retrieval.interests``);
- ``engaged_pins``: pin ids looked up in the version's pin table, clustered into weighted
  interests (``retrieval.pin_interests``), then searched as ``interests``; unknown ids are
  reported in the response, and only a request whose pins are all unknown fails (NOT_FOUND);
- ``context_pin``: ads for one pin (its stored embedding, or its text embedded with the
  version's model), searched exactly like a user embedding.

Every field is checked before anything is searched; errors name the field
(``interests[1].weight: must be > 0``). Filters, exclusions and the advertiser cap apply to
every kind as to a user embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import numpy as np

from retrieval.eligibility import RequestFilter
from retrieval.errors import FailedPrecondition, InvalidArgument, NotFound
from retrieval.interests import InterestConfig, search_interests
from retrieval.pin_interests import PinInterest, pin_importance, pin_interests
from retrieval.searcher import Hits, Searcher
from retrieval.shadow import ShadowRecall
from retrieval.state import IndexState
from retrieval.text_embedder import TextEmbedder
from retrieval.threads import SearchThreads
from retrieval.v1 import retrieval_pb2

QueryKind = Literal["user_embedding", "interests", "engaged_pins", "context_pin"]
_LISTED = 10  # ids quoted in an error message


def query_kind(request: retrieval_pb2.RetrieveRequest) -> QueryKind:
    """Which query the request carries (user_embedding when none: its checks say it is empty).

    Raises:
        InvalidArgument: more than one kind, or pin options without engaged_pins.
    """
    given: list[tuple[QueryKind, bool]] = [
        ("user_embedding", len(request.user_embedding) > 0),
        ("interests", len(request.interests) > 0),
        ("engaged_pins", len(request.engaged_pins) > 0),
        ("context_pin", request.HasField("context_pin")),
    ]
    present = [kind for kind, is_set in given if is_set]
    if len(present) > 1:
        raise InvalidArgument(
            present[1],
            f"send one of user_embedding, interests, engaged_pins or context_pin; got "
            f"{' and '.join(present)}",
        )
    kind = present[0] if present else "user_embedding"
    for name in ("max_interests", "recency_half_life_s"):
        if getattr(request, name) and kind != "engaged_pins":
            raise InvalidArgument(name, "only applies to a request with engaged_pins")
    return kind


def request_filter(request: retrieval_pb2.RetrieveRequest) -> RequestFilter:
    """The request's user context, exclusions and advertiser cap."""
    return RequestFilter(
        country=request.context.country,
        locale=request.context.locale,
        device=request.context.device,
        exclude_ad_ids=frozenset(request.exclude_ad_ids),
        exclude_advertiser_ids=frozenset(request.exclude_advertiser_ids),
        max_per_advertiser=request.max_per_advertiser,
    )


def _weight(message: Any, field: str) -> float:
    """An optional ``weight`` field: unset means 1; set, it must be finite and > 0."""
    if not message.HasField("weight"):
        return 1.0
    weight = float(message.weight)
    if not (math.isfinite(weight) and weight > 0):
        raise InvalidArgument(field, f"must be > 0 (and finite), got {weight}")
    return weight


def _listed(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - _LISTED} more" if len(ids) > _LISTED else ""
    return ", ".join(repr(i) for i in ids[:_LISTED]) + more


class InterestRetrieval:
    """Answers the Retrieve requests that carry interests, engaged pins or a context pin."""

    def __init__(
        self,
        state: IndexState,
        config: InterestConfig | None = None,
        *,
        text: TextEmbedder | None = None,
        threads: SearchThreads | None = None,
        shadow: ShadowRecall | None = None,
    ):
        self._state = state
        self.config = config or InterestConfig()
        self._text = text or TextEmbedder()
        self._threads = threads
        self._shadow = shadow

    def _searching(self) -> AbstractContextManager[Any]:
        return self._threads.search() if self._threads is not None else nullcontext()

    def retrieve(
        self, request: retrieval_pb2.RetrieveRequest, kind: QueryKind
    ) -> retrieval_pb2.RetrieveResponse:
        searcher = self._state.searcher_for(request.index_version)  # one version per call
        searcher.check_limits(request.k, request.nprobe)
        flt = request_filter(request)
        if kind == "context_pin":
            return self._context_pin(request, searcher, flt)
        unknown: list[str] = []
        groups: list[PinInterest] | None = None
        pin_ids: list[str] = []
        if kind == "interests":
            xq, weights = self._interests(request, searcher)
        else:
            xq, weights, groups, pin_ids, unknown = self._engaged_pins(request, searcher)
        with self._searching():
            found = search_interests(
                searcher, xq, weights, request.k, request.nprobe, flt, config=self.config
            )
        if self._shadow is not None:
            self._shadow.skip()  # a merge of several searches has no single exact answer
        response = _response(searcher, found.hits, found.ids, found.scores, found.found_by)
        total = float(np.sum(weights))
        for i, (quota, contributed) in enumerate(zip(found.quotas, found.contributed, strict=True)):
            response.interests.add(
                weight=float(weights[i]) / total,
                quota=int(quota),
                contributed=int(contributed),
                pin_ids=[pin_ids[r] for r in groups[i].rows] if groups is not None else [],
            )
        response.unknown_pin_ids.extend(unknown)
        return response

    # -- interests ---------------------------------------------------------------------------
    def _interests(
        self, request: retrieval_pb2.RetrieveRequest, searcher: Searcher
    ) -> tuple[np.ndarray, np.ndarray]:
        n, limit = len(request.interests), self.config.max_interests
        if n > limit:
            raise InvalidArgument("interests", f"at most {limit} per request, got {n}")
        rows, weights = [], []
        for i, interest in enumerate(request.interests):
            x = np.asarray(interest.embedding, dtype=np.float32)
            rows.append(searcher.check_query(x, f"interests[{i}].embedding")[0])
            weights.append(_weight(interest, f"interests[{i}].weight"))
        return np.stack(rows), np.array(weights)

    # -- engaged pins ------------------------------------------------------------------------
    def _pin_options(self, request: retrieval_pb2.RetrieveRequest) -> tuple[int, float]:
        """(interests kept, half-life in seconds) for an engaged_pins request."""
        limit = self.config.max_interests
        if not 0 <= request.max_interests <= limit:
            raise InvalidArgument(
                "max_interests",
                f"must be in [0, {limit}] (0 = default), got {request.max_interests}",
            )
        if request.recency_half_life_s < 0:
            raise InvalidArgument(
                "recency_half_life_s",
                f"must be >= 0 (0 = default), got {request.recency_half_life_s}",
            )
        return (
            request.max_interests or self.config.pin_interests,
            float(request.recency_half_life_s) or self.config.half_life_s,
        )

    def _engagements(
        self, request: retrieval_pb2.RetrieveRequest
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Checked engagements: (pin ids, times, weights), one entry per engagement."""
        n, limit = len(request.engaged_pins), self.config.max_engaged_pins
        if n > limit:
            raise InvalidArgument("engaged_pins", f"at most {limit} per request, got {n}")
        times = np.zeros(n, dtype=np.int64)
        weights = np.ones(n, dtype=np.float64)
        for j, pin in enumerate(request.engaged_pins):
            if not pin.pin_id.strip():
                raise InvalidArgument(f"engaged_pins[{j}].pin_id", "must not be empty")
            if pin.engaged_at_unix_s < 0:
                raise InvalidArgument(
                    f"engaged_pins[{j}].engaged_at_unix_s",
                    f"must be >= 0 (0 = unknown), got {pin.engaged_at_unix_s}",
                )
            times[j] = pin.engaged_at_unix_s
            weights[j] = _weight(pin, f"engaged_pins[{j}].weight")
        return [p.pin_id for p in request.engaged_pins], times, weights

    def _engaged_pins(
        self, request: retrieval_pb2.RetrieveRequest, searcher: Searcher
    ) -> tuple[np.ndarray, np.ndarray, list[PinInterest], list[str], list[str]]:
        """Interests from engaged pins: (xq, weights, clusters, pin id per row, unknown ids)."""
        max_interests, half_life_s = self._pin_options(request)
        ids, times, weights = self._engagements(request)
        table = searcher.artifact.pins
        if table is None:
            raise FailedPrecondition(
                f"engaged_pins: index version {searcher.version} has no pin table "
                "(build it with 'adindex build --pins')"
            )
        distinct = list(dict.fromkeys(ids))  # first appearance order
        rows, unknown = table.lookup(distinct)
        if not rows:
            raise NotFound(
                f"engaged_pins: none of the {len(distinct)} pin id(s) is in the pin table of "
                f"index version {searcher.version}: {_listed(unknown)}"
            )
        known = {table.pin_ids[r]: i for i, r in enumerate(rows)}
        importance = np.zeros(len(rows))
        for pin_id, weight in zip(ids, pin_importance(times, weights, half_life_s), strict=True):
            if (i := known.get(pin_id)) is not None:
                importance[i] += weight  # engagements with one pin add up
        xp = np.ascontiguousarray(table.embeddings[rows], dtype=np.float32)
        groups = pin_interests(
            xp,
            importance,
            max_interests=max_interests,
            merge_cost=self.config.merge_cost,
            vector=self.config.pin_vector,
        )
        xq = np.stack([g.vector for g in groups])
        pin_ids = [table.pin_ids[r] for r in rows]
        return xq, np.array([g.weight for g in groups]), groups, pin_ids, unknown

    # -- context pin -------------------------------------------------------------------------
    def _context_pin(
        self, request: retrieval_pb2.RetrieveRequest, searcher: Searcher, flt: RequestFilter
    ) -> retrieval_pb2.RetrieveResponse:
        pin = request.context_pin
        if bool(pin.pin_id) == bool(pin.text):
            raise InvalidArgument("context_pin", "set exactly one of pin_id and text")
        if pin.pin_id:
            table = searcher.artifact.pins
            if table is None:
                raise FailedPrecondition(
                    f"context_pin.pin_id: index version {searcher.version} has no pin table "
                    "(build it with 'adindex build --pins', or send the pin's text)"
                )
            row = table.row_of.get(pin.pin_id)
            if row is None:
                raise NotFound(
                    f"context_pin.pin_id: {pin.pin_id!r} is not in the pin table of index "
                    f"version {searcher.version}"
                )
            x = np.asarray(table.embeddings[row], dtype=np.float32)
        else:
            if not pin.text.strip():
                raise InvalidArgument("context_pin.text", "must not be blank")
            x = self._text.for_version(searcher, "context_pin.text").encode([pin.text])[0]
        with self._searching():
            hits = searcher.search(x, request.k, request.nprobe, flt)
        if self._shadow is not None:
            if flt.max_per_advertiser:
                self._shadow.skip()
            else:
                self._shadow.offer(searcher, x, request.k, hits)
        return _response(searcher, [hits], hits.ids, hits.scores)


def _response(
    searcher: Searcher,
    hits: Sequence[Hits],
    ids: np.ndarray,
    scores: np.ndarray,
    found_by: Sequence[tuple[int, ...]] | None = None,
) -> retrieval_pb2.RetrieveResponse:
    """Candidates with their ads' ids (and, with several interests, which ones found them).

    ``nprobe`` is the most any query probed (one may have widened); ``plan`` is "ivf" if any
    query probed lists.
    """
    plan = "ivf" if any(h.plan == "ivf" for h in hits) else "exact"
    response = retrieval_pb2.RetrieveResponse(
        index_version=searcher.version, nprobe=max(h.nprobe for h in hits), plan=plan
    )
    view = hits[0].view
    add = response.candidates.add
    for j, (row, score) in enumerate(zip(ids.tolist(), scores.tolist(), strict=True)):
        ad = searcher.meta(row, view)
        add(
            ad_id=ad.ad_id,
            advertiser_id=ad.advertiser_id,
            campaign_id=ad.campaign_id,
            score=score,
            interests=found_by[j] if found_by is not None else (),
        )
    return response
