"""A deterministic, realistic SAMPLE ad catalog and sample users, for demos, tests and benchmarks.

The ads read like promoted pins on a visual-discovery platform: 25 categories, each with its own
vocabulary (products, styles, materials, occasions, selling points), composed through mixed
templates so that near neighbours are related but rarely the same sentence. Advertisers are
skewed (a few big ones, a long tail of small ones), each sells in one or two categories, and
campaigns carry the targeting. Users are described by the organic pins they engaged with,
written from different templates than the ads, so a user's text is never a copy of an ad. Each
pin has an id and an engagement time, and ``write_sample`` also writes every user's pins as a
pins file (``adindex build --pins``), so users can be served by the pins they engaged with.

Everything is drawn from ``random.Random(seed)``: the same arguments give byte-identical files.
The category of an ad is recoverable from its campaign id, ``cmp-<category-slug>-NNN``
(see ``category_of``). The words and templates themselves are in ``indexer.sample_vocab``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from indexer.catalog import write_catalog_jsonl
from indexer.records import DEVICES, AdRecord, Targeting
from indexer.sample_vocab import (
    BRAND_SUFFIXES,
    BRAND_WORDS,
    CLOSERS,
    COLOR_TITLES,
    COLORS,
    COUNTRIES,
    CREATIVE_SEPARATORS,
    CTAS,
    INTROS,
    OFFERS,
    PIN_DESCRIPTIONS,
    PIN_RESULTS,
    PIN_TITLES,
    SEASONS,
    TANGIBLE_CLOSERS,
    TANGIBLE_OFFERS,
    TITLES,
    USER_DEVICE_CUM_WEIGHTS,
    USER_DEVICES,
    VOCABS,
    Vocab,
)

__all__ = [
    "CATEGORIES",
    "PINS_FILE",
    "SAMPLE_NOW_UNIX_S",
    "Pin",
    "SampleUser",
    "category_of",
    "generate_catalog",
    "generate_users",
    "read_users",
    "write_sample",
]

logger = logging.getLogger(__name__)

DEFAULT_ADS = 3000  # the demo's catalog: small enough to embed in well under a minute on 2 cores
DEFAULT_USERS = 20
DEFAULT_SEED = 7
CATALOG_FILE = "catalog.jsonl"
USERS_FILE = "users.jsonl"
PINS_FILE = "pins.jsonl"  # beside the catalog: every sample user's pins, for --pins
SAMPLE_NOW_UNIX_S = 1_767_225_600  # 2026-01-01T00:00:00Z: sample engagements are before it
_MAX_ENGAGEMENT_AGE_S = 120 * 86_400


@dataclass(frozen=True)
class Pin:
    """An organic pin a user saved or clicked."""

    title: str
    description: str
    pin_id: str = ""  # "pin-<user number>-<j>"
    category: str = ""  # the name from CATEGORIES it was written from
    engaged_at_unix_s: int = 0  # when the user engaged with it

    def text(self) -> str:
        """The pin as one string: "title. description"."""
        return f"{self.title}. {self.description}"


@dataclass(frozen=True)
class SampleUser:
    """A user described by the pins they engaged with."""

    user_id: str
    interests: tuple[str, ...]  # names from CATEGORIES the pins were drawn from
    pins: tuple[Pin, ...]  # 3-8 pins
    country: str  # "US"
    locale: str  # "en-US"
    device: str  # one of indexer.catalog.DEVICES


# --- Vocabulary lookups (the words themselves are in indexer.sample_vocab) ----------------------


CATEGORIES: tuple[str, ...] = tuple(v.name for v in VOCABS)
_BY_SLUG: dict[str, Vocab] = {v.slug: v for v in VOCABS}
_CUM_WEIGHTS: tuple[float, ...] = tuple(accumulate(v.weight for v in VOCABS))

_COUNTRY_CUM_WEIGHTS = tuple(accumulate(w for _, w, _ in COUNTRIES))
_LOCALES = {c: locales for c, _, locales in COUNTRIES}

_TITLE_POOLS = {False: TITLES, True: TITLES + COLOR_TITLES}  # by Vocab.tangible
_CLOSER_POOLS = {False: CLOSERS, True: CLOSERS + TANGIBLE_CLOSERS}
_OFFER_POOLS = {False: OFFERS, True: OFFERS + TANGIBLE_OFFERS}

# Ads per advertiser: lognormal, so the top tenth of advertisers hold about half of the ads.
_ADVERTISER_SIZE_SIGMA = 1.25
_ADS_PER_ADVERTISER = 12
_MIN_ADVERTISERS = 20
_P_SECONDARY_CATEGORY = 0.4  # advertisers that also sell in a related category
_P_CROSSOVER = 0.12  # ads that borrow styles and materials from a related category
_P_CAMPAIGN_STYLE = 0.5  # ads that use their campaign's signature style
_P_CAMPAIGN_PAUSED = 0.04
_P_AD_PAUSED = 0.065  # with paused campaigns: about 10% of ads paused


# --- Helpers ------------------------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(word: str) -> str:
    """``word`` with its indefinite article."""
    lower = word.lower()
    vowel = lower[:1] in "aeiou" and not lower.startswith(("uni", "use", "eu", "one"))
    return f"{'an' if vowel or lower.startswith(('heir', 'hour')) else 'a'} {word}"


def _pair(rng: random.Random, items: Sequence[str]) -> tuple[str, str]:
    """Two different items (the same one only if there is just one)."""
    i = rng.randrange(len(items))
    if len(items) == 1:
        return items[i], items[i]
    return items[i], items[(i + 1 + rng.randrange(len(items) - 1)) % len(items)]


def _words(text: str) -> int:
    """Words, not counting the separators the templates use ("|", "·", "&")."""
    tokens = text.split()
    return len(tokens) - tokens.count("|") - tokens.count("·") - tokens.count("&")


def _pick_country(rng: random.Random) -> str:
    return COUNTRIES[rng.choices(range(len(COUNTRIES)), cum_weights=_COUNTRY_CUM_WEIGHTS)[0]][0]


def _pick_category(rng: random.Random) -> Vocab:
    return rng.choices(VOCABS, cum_weights=_CUM_WEIGHTS)[0]


def _slots(
    rng: random.Random,
    vocab: Vocab,
    look: Vocab,
    style: str | None,
    season: str | None,
    brand: str,
) -> dict[str, str]:
    """The words one ad is written from; ``look`` supplies styles and materials (crossover)."""
    (noun, nouns), (noun2, noun2s) = _pair_nouns(rng, vocab)
    style1, style2 = _pair(rng, look.styles)
    if style is not None and style != style2:
        style1 = style
    color, color2 = _pair(rng, COLORS)
    return {
        "noun": noun, "nouns": nouns, "noun2": noun2, "noun2s": noun2s,
        "style": style1, "style2": style2, "a_style": _a(style1),
        "material": rng.choice(look.materials), "use": rng.choice(vocab.uses),
        "season": season or rng.choice(SEASONS), "brand": brand, "color": color, "color2": color2,
        "n": str(rng.choice((3, 5, 7, 10, 12, 15, 20))), "pct": str(rng.choice((10, 15, 20, 25, 30, 40, 50))),
        "price": f"{rng.choice(vocab.prices_usd):,}", "rating": rng.choice(("4.6", "4.7", "4.8", "4.9")),
        "k": str(rng.choice((2, 5, 10, 25, 50))), "ship": str(rng.choice((35, 50, 75))),
    }  # fmt: skip


def _pair_nouns(rng: random.Random, vocab: Vocab) -> tuple[tuple[str, str], tuple[str, str]]:
    i = rng.randrange(len(vocab.nouns))
    j = (i + 1 + rng.randrange(len(vocab.nouns) - 1)) % len(vocab.nouns)
    return vocab.nouns[i], vocab.nouns[j]


# --- Catalog ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Advertiser:
    advertiser_id: str
    brand: str
    categories: tuple[Vocab, ...]  # primary, then optionally one related category
    home_country: str


@dataclass(frozen=True)
class _Campaign:
    campaign_id: str
    advertiser: _Advertiser
    vocab: Vocab
    targeting: Targeting
    paused: bool
    bid_usd: float
    style: str  # the campaign's signature style, used by about half of its ads
    season: str


def _advertiser_sizes(rng: random.Random, n_ads: int, n_advertisers: int) -> list[int]:
    """Ads per advertiser: at least one each, the rest shared out by lognormal weights."""
    raw = [rng.lognormvariate(0.0, _ADVERTISER_SIZE_SIGMA) for _ in range(n_advertisers)]
    spare, total = n_ads - n_advertisers, sum(raw)
    exact = [spare * w / total for w in raw]
    sizes = [1 + int(x) for x in exact]
    # Largest remainders get the leftover ads; the index breaks ties, so no float order matters.
    by_remainder = sorted(range(n_advertisers), key=lambda i: (int(exact[i]) - exact[i], i))
    for i in by_remainder[: n_ads - sum(sizes)]:
        sizes[i] += 1
    return sizes


def _advertiser(rng: random.Random, number: int) -> _Advertiser:
    primary = _pick_category(rng)
    categories: tuple[Vocab, ...] = (primary,)
    if rng.random() < _P_SECONDARY_CATEGORY:
        categories += (_BY_SLUG[rng.choice(primary.related)],)
    word, word2 = _pair(rng, BRAND_WORDS)
    r = rng.random()
    if r < 0.5:
        brand = f"{word} {rng.choice(primary.brands)}"
    elif r < 0.8:
        brand = f"{word} {rng.choice(BRAND_SUFFIXES)}"
    else:
        brand = f"{word} & {word2}"
    return _Advertiser(f"adv-{number:04d}", brand, categories, _pick_country(rng))


def _targeting(rng: random.Random, home_country: str) -> Targeting:
    """About 40% everywhere, 50% 1-5 countries (some also by locale or device), 10% device only."""
    r = rng.random()
    if r < 0.40:
        return Targeting()
    devices: tuple[str, ...] = ()
    if r >= 0.90 or rng.random() < 0.25:
        chosen = rng.sample(DEVICES, rng.choice((1, 2)))
        devices = tuple(d for d in DEVICES if d in chosen)
    if r >= 0.90:
        return Targeting(devices=devices)
    n_countries = rng.choices((1, 2, 3, 4, 5), weights=(40, 20, 15, 13, 12))[0]
    chosen = [home_country]
    while len(chosen) < n_countries:
        if (country := _pick_country(rng)) not in chosen:
            chosen.append(country)
    countries = tuple(c for c, _, _ in COUNTRIES if c in chosen)
    locales: list[str] = []
    if rng.random() < 0.35:
        for country in countries:
            all_locales = _LOCALES[country]
            locales.extend(all_locales if rng.random() < 0.3 else all_locales[:1])
    return Targeting(countries, tuple(locales), devices)


def _campaigns(
    rng: random.Random, advertiser: _Advertiser, n_ads: int, counters: dict[str, int]
) -> list[_Campaign]:
    """The advertiser's campaigns, one entry per ad (so big campaigns repeat)."""
    n_campaigns = min(n_ads, 1 + int(n_ads**0.6 / 1.5))
    campaigns = []
    for _ in range(n_campaigns):
        primary = len(advertiser.categories) == 1 or rng.random() < 0.7
        vocab = advertiser.categories[0 if primary else 1]
        counters[vocab.slug] = counters.get(vocab.slug, 0) + 1
        campaigns.append(
            _Campaign(
                campaign_id=f"cmp-{vocab.slug}-{counters[vocab.slug]:03d}",
                advertiser=advertiser,
                vocab=vocab,
                targeting=_targeting(rng, advertiser.home_country),
                paused=rng.random() < _P_CAMPAIGN_PAUSED,
                bid_usd=vocab.base_bid_usd * rng.lognormvariate(0.0, 0.5),
                style=rng.choice(vocab.styles),
                season=rng.choice(SEASONS),
            )
        )
    weights = [rng.lognormvariate(0.0, 0.8) for _ in campaigns]
    return campaigns + rng.choices(campaigns, weights=weights, k=n_ads - n_campaigns)


def _title(rng: random.Random, vocab: Vocab, slots: Mapping[str, str]) -> str:
    title = rng.choice(_TITLE_POOLS[vocab.tangible]).format_map(slots)
    if _words(title) > 12:  # long nouns and uses: fall back to the shortest template
        title = TITLES[0].format_map(slots)
    return _cap(title)


def _description(rng: random.Random, vocab: Vocab, slots: Mapping[str, str]) -> str:
    parts = [_cap(rng.choice(INTROS).format_map(slots)), rng.choice(vocab.benefits)]
    if rng.random() < 0.3:
        parts.reverse()
    if rng.random() < 0.7:
        parts.append(rng.choice(_CLOSER_POOLS[vocab.tangible]).format_map(slots))
    text = " ".join(parts)
    return " ".join(parts[:2]) if _words(text) > 30 else text


def _creative(rng: random.Random, vocab: Vocab, slots: Mapping[str, str]) -> str:
    offer = _cap(rng.choice(_OFFER_POOLS[vocab.tangible]).format_map(slots))
    cta = _cap(rng.choice(vocab.ctas) if rng.random() < 0.6 else rng.choice(CTAS))
    r = rng.random()
    text = offer if r < 0.25 else cta if r < 0.45 else offer + rng.choice(CREATIVE_SEPARATORS) + cta
    return text if _words(text) <= 8 else cta


def _ad(rng: random.Random, number: int, campaign: _Campaign) -> AdRecord:
    vocab = look = campaign.vocab
    if rng.random() < _P_CROSSOVER:
        look = _BY_SLUG[rng.choice(vocab.related)]
    style = campaign.style if rng.random() < _P_CAMPAIGN_STYLE else None
    season = campaign.season if rng.random() < 0.7 else None
    slots = _slots(rng, vocab, look, style, season, campaign.advertiser.brand)
    paused = campaign.paused or rng.random() < _P_AD_PAUSED
    return AdRecord(
        ad_id=f"ad-{number:06d}",
        advertiser_id=campaign.advertiser.advertiser_id,
        campaign_id=campaign.campaign_id,
        title=_title(rng, vocab, slots),
        description=_description(rng, vocab, slots),
        creative_text=_creative(rng, vocab, slots),
        targeting=campaign.targeting,
        status="paused" if paused else "active",
        bid=round(max(0.05, campaign.bid_usd * rng.lognormvariate(0.0, 0.15)), 2),
    )


def generate_catalog(n_ads: int, *, seed: int = DEFAULT_SEED) -> list[AdRecord]:
    """A realistic sample catalog; the same arguments always give the same records.

    About ``n_ads / 12`` advertisers (at least 20, at most ``n_ads``) with lognormal sizes, each
    in one or two related categories and with several campaigns; campaigns carry targeting and
    a bid level, and about 10% of ads are paused.

    Args:
        n_ads: Number of ads, >= 0.
        seed: Seed of the generator.

    Returns:
        ``n_ads`` records with ids "ad-000001"... in order; ``category_of`` recovers each category.
    """
    if n_ads < 0:
        raise ValueError(f"n_ads must be >= 0; got {n_ads}")
    if n_ads == 0:
        return []
    rng = random.Random(seed)
    n_advertisers = min(n_ads, max(_MIN_ADVERTISERS, round(n_ads / _ADS_PER_ADVERTISER)))
    sizes = _advertiser_sizes(rng, n_ads, n_advertisers)
    counters: dict[str, int] = {}
    slots: list[_Campaign] = []
    for number, size in enumerate(sizes, 1):
        slots.extend(_campaigns(rng, _advertiser(rng, number), size, counters))
    rng.shuffle(slots)  # ad ids do not follow advertisers
    return [_ad(rng, number, campaign) for number, campaign in enumerate(slots, 1)]


def category_of(record: AdRecord) -> str:
    """The category (a name from CATEGORIES) the generator drew a sample ad from.

    Raises:
        ValueError: if the campaign id is not of the sample form "cmp-<category-slug>-NNN".
    """
    prefix, _, rest = record.campaign_id.partition("-")
    slug, _, number = rest.rpartition("-")
    if prefix != "cmp" or slug not in _BY_SLUG or not number.isdigit():
        raise ValueError(
            f"ad {record.ad_id!r}: campaign_id {record.campaign_id!r} is not a sample campaign id "
            "of the form 'cmp-<category-slug>-NNN'"
        )
    return _BY_SLUG[slug].name


# --- Users --------------------------------------------------------------------------------------


def _pin(rng: random.Random, vocab: Vocab) -> Pin:
    noun, nouns = rng.choice(vocab.nouns)
    style, style2 = _pair(rng, vocab.styles)
    topic, material = rng.choice(vocab.topics), rng.choice(vocab.materials)
    slots = {
        "noun": noun, "nouns": nouns, "style": style, "style2": style2, "a_style": _a(style),
        "topic": topic, "topic_base": topic.removesuffix(" ideas").removesuffix(" tips"),
        "material": material, "a_material": _cap(_a(material)),
        "use": rng.choice(vocab.uses), "season": rng.choice(SEASONS),
        "n": str(rng.choice((5, 10, 12, 15, 20, 25, 30, 50))), "result": rng.choice(PIN_RESULTS),
    }  # fmt: skip
    title = _cap(rng.choice(PIN_TITLES).format_map(slots))
    description = _cap(rng.choice(PIN_DESCRIPTIONS).format_map(slots))
    if rng.random() < 0.4:
        topic_tag = "".join(c for c in topic.lower() if c.isalnum())
        description += f" #{vocab.slug.replace('-', '')} #{topic_tag}"
    return Pin(title, description)


def _user(rng: random.Random, number: int) -> SampleUser:
    n_interests = rng.choices((1, 2, 3), weights=(3, 4, 3))[0]
    interests: list[Vocab] = []
    while len(interests) < n_interests:
        if (vocab := _pick_category(rng)) not in interests:
            interests.append(vocab)
    n_pins = rng.randint(3, 8)
    sources = interests + [rng.choice(interests) for _ in range(n_pins - n_interests)]
    rng.shuffle(sources)
    country = _pick_country(rng)
    locales = _LOCALES[country]
    locale = locales[0] if len(locales) == 1 or rng.random() < 0.8 else rng.choice(locales[1:])
    pins = [_pin(rng, vocab) for vocab in sources]
    # Engagement times from their own generator: the users drawn before them stay unchanged.
    times = random.Random(f"engaged-{number}")
    pins = [
        dataclasses.replace(
            pin,
            pin_id=f"pin-{number:05d}-{j}",
            category=vocab.name,
            engaged_at_unix_s=SAMPLE_NOW_UNIX_S - times.randrange(_MAX_ENGAGEMENT_AGE_S),
        )
        for j, (pin, vocab) in enumerate(zip(pins, sources, strict=True))
    ]
    return SampleUser(
        user_id=f"user-{number:05d}",
        interests=tuple(v.name for v in interests),
        pins=tuple(pins),
        country=country,
        locale=locale,
        device=rng.choices(USER_DEVICES, cum_weights=USER_DEVICE_CUM_WEIGHTS)[0],
    )


def generate_users(n_users: int, *, seed: int = 11) -> list[SampleUser]:
    """Sample users, each with 1-3 interest categories and 3-8 organic pins from them.

    Pins are written from their own templates, never from the ad templates, so a user's text
    shares the category vocabulary with matching ads but is not a copy of any ad.

    Args:
        n_users: Number of users, >= 0.
        seed: Seed of the generator.

    Returns:
        Users "user-00001"... in order.
    """
    if n_users < 0:
        raise ValueError(f"n_users must be >= 0; got {n_users}")
    rng = random.Random(seed)
    return [_user(rng, number) for number in range(1, n_users + 1)]


def _user_to_json(user: SampleUser) -> dict[str, object]:
    return {
        "user_id": user.user_id,
        "interests": list(user.interests),
        "pins": [_pin_to_json(p) for p in user.pins],
        "country": user.country,
        "locale": user.locale,
        "device": user.device,
    }


def _pin_to_json(pin: Pin) -> dict[str, object]:
    return {
        "pin_id": pin.pin_id,
        "title": pin.title,
        "description": pin.description,
        "category": pin.category,
        "engaged_at_unix_s": pin.engaged_at_unix_s,
    }


def _pin_from_json(obj: dict[str, Any]) -> Pin:
    return Pin(
        obj["title"],
        obj["description"],
        obj.get("pin_id", ""),
        obj.get("category", ""),
        obj.get("engaged_at_unix_s", 0),
    )


def read_users(path: Path) -> list[SampleUser]:
    """Read a users.jsonl file written by ``write_sample``."""
    users = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                pins = tuple(_pin_from_json(p) for p in obj["pins"])
                users.append(
                    SampleUser(
                        obj["user_id"],
                        tuple(obj["interests"]),
                        pins,
                        obj["country"],
                        obj["locale"],
                        obj["device"],
                    )
                )
    return users


def write_sample(
    out_dir: Path,
    *,
    n_ads: int = DEFAULT_ADS,
    n_users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
) -> tuple[Path, Path]:
    """Write a sample catalog and sample users; the same arguments give byte-identical files.

    Users are drawn with ``seed + 4``, so the default seed gives ``generate_users``' default.

    Args:
        out_dir: Directory to write into (created if missing).
        n_ads: Number of ads.
        n_users: Number of users.
        seed: Seed of the catalog.

    Returns:
        (catalog path, users path): ``out_dir/catalog.jsonl`` (read it with
        ``indexer.catalog.read_catalog``) and ``out_dir/users.jsonl`` (``read_users``). The
        users' pins are also written to ``out_dir/pins.jsonl`` (``PINS_FILE``: pin_id, title,
        description; ``indexer.pins.read_pins``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog_path, users_path = out_dir / CATALOG_FILE, out_dir / USERS_FILE
    write_catalog_jsonl(generate_catalog(n_ads, seed=seed), catalog_path)
    users = generate_users(n_users, seed=seed + 4)
    with users_path.open("w", encoding="utf-8", newline="\n") as f:
        for user in users:
            f.write(json.dumps(_user_to_json(user), ensure_ascii=False) + "\n")
    with (out_dir / PINS_FILE).open("w", encoding="utf-8", newline="\n") as f:
        for pin in (p for u in users for p in u.pins):
            row = {"pin_id": pin.pin_id, "title": pin.title, "description": pin.description}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    logger.info(
        "Wrote %d sample ads to %s and %d users to %s", n_ads, catalog_path, n_users, users_path
    )
    return catalog_path, users_path
