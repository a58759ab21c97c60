"""``adindex demo``: sample catalog -> index -> server -> candidates for sample users.

Everything is real: the model embeds the ads and the users' pins, FAISS builds the IVF-PQ
index, and the candidates come back from the gRPC server through a loopback channel. Last, a
user with two distinct interests is served twice: by the average of their pins' embeddings,
and by the pins they engaged with (the server clusters them into interests; docs/interests.md).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.ann import normalize
from indexer.build import BuildConfig, build
from indexer.embedding import SentenceTransformerEmbedder
from indexer.records import AdRecord
from indexer.sample import (
    DEFAULT_ADS,
    PINS_FILE,
    SampleUser,
    category_of,
    generate_catalog,
    generate_users,
    write_sample,
)
from retrieval.client import RetrievalClient, engaged_pin
from retrieval.server import ServerConfig, create_server
from retrieval.v1 import retrieval_pb2

logger = logging.getLogger(__name__)

MAX_PER_ADVERTISER = 2


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path = Path(".demo")
    n_ads: int = DEFAULT_ADS
    n_users: int = 4
    k: int = 8
    model: Path | None = None

    def __post_init__(self) -> None:
        if self.n_ads < 1 or self.n_users < 1 or self.k < 1:
            raise ValueError(
                f"ads, users and k must be >= 1; got {self.n_ads}, {self.n_users}, {self.k}"
            )


def user_embedding(embedder: SentenceTransformerEmbedder, user: SampleUser) -> np.ndarray:
    """A user as the normalised mean of the embeddings of the pins they engaged with."""
    pins = embedder.encode([p.text() for p in user.pins])
    xq: np.ndarray = normalize(pins.mean(axis=0, keepdims=True))[0]
    return xq


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_user(
    user: SampleUser, rows: list[tuple[float, str, str, str, str]], latency_ms: float, version: str
) -> None:
    print(
        f"\nUser {user.user_id} ({user.country}, {user.device}) likes {', '.join(user.interests)}"
    )
    for pin in user.pins[:3]:
        print(f"  pinned: {_shorten(pin.title, 70)}")
    print(
        f"  Retrieve k={len(rows)}, targeting {user.country}/{user.locale}/{user.device}, at most "
        f"{MAX_PER_ADVERTISER} per advertiser, index {version}: {latency_ms:.1f} ms round trip"
    )
    print(f"  {'#':>2}  {'score':>5}  {'ad':<10} {'advertiser':<10} {'category':<20} title")
    for rank, (score, ad_id, advertiser, category, title) in enumerate(rows, 1):
        print(
            f"  {rank:>2}  {score:5.3f}  {ad_id:<10} {advertiser:<10} {category:<20} {_shorten(title, 60)}"
        )


def run_demo(config: DemoConfig) -> None:
    t0 = time.perf_counter()
    catalog_path, _ = write_sample(
        config.workdir / "sample", n_ads=config.n_ads, n_users=config.n_users
    )
    records = {r.ad_id: r for r in generate_catalog(config.n_ads)}
    print(f"Sample catalog: {len(records)} ads -> {catalog_path}")
    embedder = SentenceTransformerEmbedder(config.model)
    result = build(
        BuildConfig(
            catalog=catalog_path,
            out=config.workdir / "index",
            model=config.model,
            pins=catalog_path.parent / PINS_FILE,  # the sample users' pins, by id
        ),
        embedder=embedder,
    )
    m = result.manifest
    print(
        f"Built {m.index.factory} over {m.counts.ads} ads ({m.counts.paused} paused) "
        f"in {sum(m.build.seconds.values()):.1f} s -> {result.version_dir}"
    )
    running = create_server(ServerConfig(port=0, index=config.workdir / "index"))
    try:
        with RetrievalClient(f"127.0.0.1:{running.port}") as client:
            users = generate_users(config.n_users)  # the users write_sample wrote, pins too
            for user in users:
                xq = user_embedding(embedder, user)
                t = time.perf_counter()
                # The user's own context filters by targeting; diversity caps each advertiser.
                response = client.retrieve(
                    xq,
                    config.k,
                    country=user.country,
                    locale=user.locale,
                    device=user.device,
                    max_per_advertiser=MAX_PER_ADVERTISER,
                )
                latency_ms = (time.perf_counter() - t) * 1e3
                rows = []
                for c in response.candidates:
                    r = records[c.ad_id]
                    rows.append((c.score, c.ad_id, c.advertiser_id, category_of(r), r.title))
                print_user(user, rows, latency_ms, response.index_version)
            two_tastes(client, embedder, records, users, config.k)
    finally:
        running.stop()
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s. Paused ads are never returned.")


def _labels(
    response: retrieval_pb2.RetrieveResponse, records: dict[str, AdRecord]
) -> list[tuple[str, str]]:
    """(category, title) of each candidate."""
    return [(category_of(records[c.ad_id]), records[c.ad_id].title) for c in response.candidates]


def two_tastes(
    client: RetrievalClient,
    embedder: SentenceTransformerEmbedder,
    records: dict[str, AdRecord],
    users: list[SampleUser],
    k: int,
) -> None:
    """A user with two distinct interests: the averaged embedding beside the multi-interest
    call (engaged pins, clustered by the server), candidates by category."""
    user = next((u for u in users if len(u.interests) == 2), None)
    if user is None:
        print("\nNo sample user with two interests among these; try --users 4 or more.")
        return
    averaged = client.retrieve(user_embedding(embedder, user), 2 * k)
    pins = [engaged_pin(p.pin_id, p.engaged_at_unix_s) for p in user.pins]
    multi = client.retrieve_for(2 * k, engaged_pins=pins)
    print(f"\nUser {user.user_id} has two tastes: {' and '.join(user.interests)}")
    for pin in user.pins:
        print(f"  pinned ({pin.category}): {_shorten(pin.title, 60)}")
    shares = ", ".join(
        f"{i.weight:.2f} ({len(i.pin_ids)} pins, {i.quota} candidates)" for i in multi.interests
    )
    print(f"  The server made {len(multi.interests)} interests of the pins: {shares}")
    left, right = _labels(averaged, records), _labels(multi, records)
    width = 48
    print(f"  {'#':>2}  {'averaged embedding':<{width}} engaged pins (several interests)")
    for rank, (a, b) in enumerate(zip(left, right, strict=True), 1):
        cells = [_shorten(f"{category}: {title}", width) for category, title in (a, b)]
        print(f"  {rank:>2}  {cells[0]:<{width}} {cells[1]}")
    for name, labels in (("averaged", left), ("several interests", right)):
        found = [category for category, _ in labels]
        counts = ", ".join(f"{found.count(c)} {c}" for c in user.interests)
        print(f"  {name}: {counts}, {len(found) - sum(map(found.count, user.interests))} other")


def _demo_flags(p: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    d = DemoConfig
    add = p.add_argument
    add(
        "--workdir",
        type=Path,
        default=d.workdir,
        help="where the sample and index go (default: %(default)s)",
    )
    add("--ads", type=int, default=d.n_ads, help="sample catalog size (default: %(default)s)")
    add("--users", type=int, default=d.n_users, help="sample users (default: %(default)s)")
    add("--k", type=int, default=d.k, help="candidates per user (default: %(default)s)")
    return cmd_demo


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(DemoConfig(workdir=args.workdir, n_ads=args.ads, n_users=args.users, k=args.k))
    return 0


# command -> adds its flags to the parser and returns its handler (help: retrieval.cli.HELP)
COMMANDS = {
    "demo": _demo_flags,
}
