"""A small typed client for RetrievalService and AdminService (CLI, demo, tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc
import numpy as np

from indexer.records import AdRecord
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

DEFAULT_PORT = 50051
DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORT}"  # where clients look by default: loopback


def ad_message(record: AdRecord, embedding: np.ndarray | None = None) -> retrieval_pb2.Ad:
    """The wire form of an ad for Upsert (embedding optional: the server embeds the text)."""
    t = record.targeting
    return retrieval_pb2.Ad(
        ad_id=record.ad_id,
        advertiser_id=record.advertiser_id,
        campaign_id=record.campaign_id,
        title=record.title,
        description=record.description,
        creative_text=record.creative_text,
        targeting=retrieval_pb2.Targeting(
            countries=t.countries, locales=t.locales, devices=t.devices
        ),
        status=record.status,
        embedding=[]
        if embedding is None
        else np.asarray(embedding, dtype=np.float32).ravel().tolist(),
    )


def engaged_pin(
    pin_id: str, engaged_at_unix_s: int = 0, weight: float | None = None
) -> retrieval_pb2.EngagedPin:
    """One engagement for ``RetrievalClient.retrieve_for(engaged_pins=...)``."""
    pin = retrieval_pb2.EngagedPin(pin_id=pin_id, engaged_at_unix_s=engaged_at_unix_s)
    if weight is not None:
        pin.weight = weight
    return pin


def _channel(target: str, root_cert: bytes | Path | None, server_name: str | None) -> grpc.Channel:
    if root_cert is None:
        return grpc.insecure_channel(target)
    pem = root_cert.read_bytes() if isinstance(root_cert, Path) else root_cert
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=pem), options)


class RetrievalClient:
    """A channel to one server; use as a context manager to close it.

    Args:
        target: ``host:port``.
        timeout_s: default deadline of every call.
        admin_token: sent as ``authorization: Bearer <token>`` on admin calls.
        root_cert: PEM certificate(s) to trust (bytes, or a file); given, the channel is TLS.
        server_name: the name the server's certificate must carry, when not ``target``'s host.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 5.0,
        admin_token: str | None = None,
        root_cert: bytes | Path | None = None,
        server_name: str | None = None,
    ):
        self.target = target
        self.timeout_s = timeout_s
        self._channel = _channel(target, root_cert, server_name)
        self.stub = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.admin = retrieval_pb2_grpc.AdminServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {admin_token}"),) if admin_token else ()

    def retrieve(
        self,
        user_embedding: Sequence[float] | np.ndarray,
        k: int = 10,
        *,
        nprobe: int = 0,
        country: str = "",
        locale: str = "",
        device: str = "",
        exclude_ad_ids: Sequence[str] = (),
        exclude_advertiser_ids: Sequence[str] = (),
        max_per_advertiser: int = 0,
        timeout_s: float | None = None,
    ) -> retrieval_pb2.RetrieveResponse:
        request = _request(
            k, nprobe, country, locale, device,
            exclude_ad_ids, exclude_advertiser_ids, max_per_advertiser,
        )  # fmt: skip
        request.user_embedding.extend(np.asarray(user_embedding, dtype=np.float32).ravel().tolist())
        return self._retrieve(request, timeout_s)

    def _retrieve(
        self, request: retrieval_pb2.RetrieveRequest, timeout_s: float | None
    ) -> retrieval_pb2.RetrieveResponse:
        response: retrieval_pb2.RetrieveResponse = self.stub.Retrieve(
            request, timeout=timeout_s or self.timeout_s
        )
        return response

    def retrieve_for(
        self,
        k: int = 10,
        *,
        interests: Sequence[Sequence[float] | np.ndarray] | np.ndarray = (),
        weights: Sequence[float] = (),
        engaged_pins: Sequence[str | retrieval_pb2.EngagedPin] = (),
        context_pin_id: str = "",
        context_pin_text: str = "",
        max_interests: int = 0,
        recency_half_life_s: int = 0,
        nprobe: int = 0,
        country: str = "",
        locale: str = "",
        device: str = "",
        exclude_ad_ids: Sequence[str] = (),
        exclude_advertiser_ids: Sequence[str] = (),
        max_per_advertiser: int = 0,
        timeout_s: float | None = None,
    ) -> retrieval_pb2.RetrieveResponse:
        """Retrieve for several interests, engaged pins or a context pin (set exactly one).

        Args:
            interests: one embedding per interest, shape (m, d) or m sequences.
            weights: one weight per interest (> 0); empty: all 1.
            engaged_pins: pin ids, or ``engaged_pin(...)`` messages with times and weights.
            context_pin_id, context_pin_text: ads for this pin (by id, or by its text).
        """
        if weights and len(weights) != len(interests):
            raise ValueError(f"{len(weights)} weights for {len(interests)} interests")
        request = _request(
            k, nprobe, country, locale, device,
            exclude_ad_ids, exclude_advertiser_ids, max_per_advertiser,
        )  # fmt: skip
        request.max_interests = max_interests
        request.recency_half_life_s = recency_half_life_s
        for i, x in enumerate(interests):
            interest = request.interests.add(
                embedding=np.asarray(x, dtype=np.float32).ravel().tolist()
            )
            if weights:
                interest.weight = weights[i]
        request.engaged_pins.extend(
            engaged_pin(p) if isinstance(p, str) else p for p in engaged_pins
        )
        if context_pin_id or context_pin_text:
            request.context_pin.CopyFrom(
                retrieval_pb2.ContextPin(pin_id=context_pin_id, text=context_pin_text)
            )
        return self._retrieve(request, timeout_s)

    def info(self, *, timeout_s: float | None = None) -> retrieval_pb2.IndexInfo:
        info: retrieval_pb2.IndexInfo = self.stub.GetIndexInfo(
            retrieval_pb2.GetIndexInfoRequest(), timeout=timeout_s or self.timeout_s
        )
        return info

    # -- admin -------------------------------------------------------------------------------
    def _eligibility(
        self,
        method: str,
        ad_ids: Sequence[str],
        campaign_ids: Sequence[str],
        advertiser_ids: Sequence[str],
    ) -> retrieval_pb2.EligibilityResponse:
        request = retrieval_pb2.EligibilityRequest(
            ad_ids=ad_ids, campaign_ids=campaign_ids, advertiser_ids=advertiser_ids
        )
        response: retrieval_pb2.EligibilityResponse = getattr(self.admin, method)(
            request, timeout=self.timeout_s, metadata=self._metadata
        )
        return response

    def pause(
        self,
        ad_ids: Sequence[str] = (),
        campaign_ids: Sequence[str] = (),
        advertiser_ids: Sequence[str] = (),
    ) -> retrieval_pb2.EligibilityResponse:
        return self._eligibility("Pause", ad_ids, campaign_ids, advertiser_ids)

    def resume(
        self,
        ad_ids: Sequence[str] = (),
        campaign_ids: Sequence[str] = (),
        advertiser_ids: Sequence[str] = (),
    ) -> retrieval_pb2.EligibilityResponse:
        return self._eligibility("Resume", ad_ids, campaign_ids, advertiser_ids)

    def delete(self, ad_ids: Sequence[str]) -> retrieval_pb2.EligibilityResponse:
        response: retrieval_pb2.EligibilityResponse = self.admin.Delete(
            retrieval_pb2.DeleteRequest(ad_ids=ad_ids),
            timeout=self.timeout_s,
            metadata=self._metadata,
        )
        return response

    def upsert(
        self, ads: Sequence[retrieval_pb2.Ad], *, timeout_s: float | None = None
    ) -> retrieval_pb2.UpsertResponse:
        response: retrieval_pb2.UpsertResponse = self.admin.Upsert(
            retrieval_pb2.UpsertRequest(ads=ads),
            timeout=timeout_s or max(self.timeout_s, 60.0),
            metadata=self._metadata,
        )
        return response

    def reload(self) -> retrieval_pb2.ReloadResponse:
        response: retrieval_pb2.ReloadResponse = self.admin.Reload(
            retrieval_pb2.ReloadRequest(),
            timeout=max(self.timeout_s, 120.0),
            metadata=self._metadata,
        )
        return response

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _request(
    k: int,
    nprobe: int,
    country: str,
    locale: str,
    device: str,
    exclude_ad_ids: Sequence[str],
    exclude_advertiser_ids: Sequence[str],
    max_per_advertiser: int,
) -> retrieval_pb2.RetrieveRequest:
    """The fields every kind of Retrieve shares: k, nprobe, targeting context and filters."""
    return retrieval_pb2.RetrieveRequest(
        k=k,
        nprobe=nprobe,
        context=retrieval_pb2.UserContext(country=country, locale=locale, device=device),
        exclude_ad_ids=exclude_ad_ids,
        exclude_advertiser_ids=exclude_advertiser_ids,
        max_per_advertiser=max_per_advertiser,
    )
