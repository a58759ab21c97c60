"""``adindex pause|resume|delete|upsert|reload``: the AdminService from the command line.

The admin token comes from ``--admin-token-file`` or the ``ADINDEX_ADMIN_TOKEN`` environment
variable (never a flag: flags show up in ``ps``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from retrieval.client import DEFAULT_TARGET, RetrievalClient, ad_message

TOKEN_ENV = "ADINDEX_ADMIN_TOKEN"

Handler = Callable[[argparse.Namespace], int]


def admin_token(path: Path | None) -> str | None:
    """The admin token from a file (first line) or ``$ADINDEX_ADMIN_TOKEN``; None if neither."""
    if path is not None:
        return path.read_text(encoding="utf-8").strip() or None
    return os.environ.get(TOKEN_ENV) or None


def _ids(text: str | None) -> list[str]:
    return [i.strip() for i in (text or "").split(",") if i.strip()]


def _client(args: argparse.Namespace) -> RetrievalClient:
    return RetrievalClient(args.server, admin_token=admin_token(args.admin_token_file))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=DEFAULT_TARGET, help="host:port (default: %(default)s)")
    p.add_argument(
        "--admin-token-file",
        type=Path,
        help=f"file holding the admin token (default: ${TOKEN_ENV})",
    )


def cmd_eligibility(args: argparse.Namespace) -> int:
    with _client(args) as client:
        call = client.pause if args.command == "pause" else client.resume
        response = call(_ids(args.ads), _ids(args.campaigns), _ids(args.advertisers))
    print(
        f"{args.command}: {response.ads_changed} ads changed (change #{response.sequence}, index {response.index_version})"
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.delete(_ids(args.ads))
    print(f"delete: {response.ads_changed} ads removed (change #{response.sequence})")
    return 0


def cmd_upsert(args: argparse.Namespace) -> int:
    from indexer.catalog import read_catalog

    catalog = read_catalog(args.catalog)  # the same validation as a build
    vectors = catalog.embeddings
    ads = [
        ad_message(r, None if vectors is None else vectors[i])
        for i, r in enumerate(catalog.records)
    ]
    with _client(args) as client:
        response = client.upsert(ads)
    print(
        f"upsert: {response.inserted} inserted, {response.updated} updated (change #{response.sequence})"
    )
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.reload()
    print(
        f"serving {response.index_version}"
        + (" (newly loaded)" if response.changed else " (unchanged)")
    )
    return 0


def _eligibility_flags(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--ads", help="comma-separated ad ids")
    p.add_argument("--campaigns", help="comma-separated campaign ids")
    p.add_argument("--advertisers", help="comma-separated advertiser ids")
    _common(p)
    return cmd_eligibility


def _delete_flags(p: argparse.ArgumentParser) -> Handler:
    p.add_argument("--ads", required=True, help="comma-separated ad ids")
    _common(p)
    return cmd_delete


def _upsert_flags(p: argparse.ArgumentParser) -> Handler:
    p.add_argument(
        "--catalog", type=Path, required=True, help="ads in catalog format (.jsonl, .csv, .parquet)"
    )
    _common(p)
    return cmd_upsert


def _reload_flags(p: argparse.ArgumentParser) -> Handler:
    _common(p)
    return cmd_reload


# command -> adds its flags to the parser and returns its handler (help: retrieval.cli.HELP)
COMMANDS: dict[str, Callable[[argparse.ArgumentParser], Handler]] = {
    "pause": _eligibility_flags,
    "resume": _eligibility_flags,
    "delete": _delete_flags,
    "upsert": _upsert_flags,
    "reload": _reload_flags,
}
