from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import pytest

from indexer.catalog import read_catalog
from indexer.pins import read_pins
from indexer.records import DEVICES, AdRecord, Targeting
from indexer.sample import (
    CATEGORIES,
    PINS_FILE,
    SAMPLE_NOW_UNIX_S,
    Pin,
    SampleUser,
    category_of,
    generate_catalog,
    generate_users,
    read_users,
    write_sample,
)

N_ADS = 2_000
N_USERS = 300


@pytest.fixture(scope="session")
def ads() -> tuple[AdRecord, ...]:
    return tuple(generate_catalog(N_ADS))


@pytest.fixture(scope="session")
def users() -> tuple[SampleUser, ...]:
    return tuple(generate_users(N_USERS))


def n_words(text: str) -> int:
    """Tokens with a letter or digit: separators such as "|", "·" and "&" do not count."""
    return len(re.findall(r"\S*\w\S*", text))


def fraction(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags)


# --- Determinism and counts ---------------------------------------------------------------------


def test_same_seed_same_catalog(ads: tuple[AdRecord, ...]) -> None:
    assert tuple(generate_catalog(N_ADS)) == ads
    assert generate_catalog(500, seed=3) == generate_catalog(500, seed=3)


def test_different_seed_different_catalog(ads: tuple[AdRecord, ...]) -> None:
    other = generate_catalog(N_ADS, seed=8)
    assert sum(a != b for a, b in zip(ads, other, strict=True)) > 0.9 * N_ADS


@pytest.mark.parametrize("n_ads", [1, 5, 19, 20, 21, 250])
def test_counts_and_ids(n_ads: int) -> None:
    records = generate_catalog(n_ads)
    assert [r.ad_id for r in records] == [f"ad-{i:06d}" for i in range(1, n_ads + 1)]
    assert all(re.fullmatch(r"adv-\d{4,}", r.advertiser_id) for r in records)
    assert all(re.fullmatch(r"cmp-[a-z-]+-\d{3,}", r.campaign_id) for r in records)


def test_empty_and_negative() -> None:
    assert generate_catalog(0) == []
    assert generate_users(0) == []
    with pytest.raises(ValueError, match="n_ads must be >= 0; got -1"):
        generate_catalog(-1)
    with pytest.raises(ValueError, match="n_users must be >= 0; got -2"):
        generate_users(-2)


# --- Categories ---------------------------------------------------------------------------------


def test_categories_are_many_and_all_present(ads: tuple[AdRecord, ...]) -> None:
    assert len(CATEGORIES) >= 20
    assert len(set(CATEGORIES)) == len(CATEGORIES)
    seen = Counter(category_of(r) for r in ads)
    assert set(seen) <= set(CATEGORIES)
    assert len(seen) >= 20


def test_category_of_rejects_foreign_campaign_ids() -> None:
    for campaign_id in ("summer-sale", "cmp-unknown-001", "cmp-home-decor", "xyz-travel-001"):
        with pytest.raises(ValueError, match="not a sample campaign id"):
            category_of(AdRecord("ad-1", "adv-1", campaign_id, title="x"))


def test_campaign_belongs_to_one_advertiser_and_category(ads: tuple[AdRecord, ...]) -> None:
    owners: dict[str, set[str]] = defaultdict(set)
    for r in ads:
        owners[r.campaign_id].add(r.advertiser_id)
    assert all(len(o) == 1 for o in owners.values())


# --- Advertisers, status, targeting, bids ------------------------------------------------------


def test_advertiser_count_and_skew(ads: tuple[AdRecord, ...]) -> None:
    sizes = sorted(Counter(r.advertiser_id for r in ads).values(), reverse=True)
    assert len(sizes) == round(N_ADS / 12)
    top_tenth = sum(sizes[: len(sizes) // 10]) / N_ADS
    assert 0.30 < top_tenth < 0.75  # a few big advertisers ...
    assert fraction([s <= 3 for s in sizes]) > 0.15  # ... and a long tail of small ones
    assert sizes[0] < 0.25 * N_ADS


def test_small_catalogs_still_have_20_advertisers() -> None:
    assert len({r.advertiser_id for r in generate_catalog(100)}) == 20
    assert len({r.advertiser_id for r in generate_catalog(7)}) == 7


def test_advertisers_stay_within_two_categories(ads: tuple[AdRecord, ...]) -> None:
    categories: dict[str, set[str]] = defaultdict(set)
    campaigns: dict[str, set[str]] = defaultdict(set)
    for r in ads:
        categories[r.advertiser_id].add(category_of(r))
        campaigns[r.advertiser_id].add(r.campaign_id)
    assert all(len(c) <= 2 for c in categories.values())
    assert any(len(c) == 2 for c in categories.values())
    sizes = Counter(r.advertiser_id for r in ads)
    assert all(len(campaigns[a]) >= 3 for a, n in sizes.items() if n >= 20)


def test_paused_fraction(ads: tuple[AdRecord, ...]) -> None:
    assert {r.status for r in ads} == {"active", "paused"}
    assert 0.05 < fraction([r.status == "paused" for r in ads]) < 0.16


def test_targeting_mix(ads: tuple[AdRecord, ...]) -> None:
    everywhere = fraction([r.targeting == Targeting() for r in ads])
    assert 0.25 < everywhere < 0.55
    by_country = [r.targeting for r in ads if r.targeting.countries]
    assert 0.3 < len(by_country) / N_ADS < 0.7
    assert {len(t.countries) for t in by_country} == {1, 2, 3, 4, 5}
    assert any(t.locales for t in by_country)
    assert any(t.devices for t in by_country)
    assert any(t.devices and not t.countries for t in (r.targeting for r in ads))


def test_targeting_is_valid_and_normalised(ads: tuple[AdRecord, ...]) -> None:
    for t in {r.targeting for r in ads}:
        assert Targeting.from_json(t.to_json()) == t
        assert set(t.devices) <= set(DEVICES)
        assert {locale.split("-")[1] for locale in t.locales} <= set(t.countries)


def test_bids_positive_and_spread(ads: tuple[AdRecord, ...]) -> None:
    bids = [r.bid for r in ads if r.bid is not None]
    assert len(bids) == N_ADS
    assert min(bids) > 0
    assert max(bids) / min(bids) > 5
    assert all(round(b, 2) == b for b in bids)


# --- Text ---------------------------------------------------------------------------------------


def test_every_ad_has_text_of_typical_length(ads: tuple[AdRecord, ...]) -> None:
    for r in ads:
        assert 4 <= n_words(r.title) <= 12, r.title
        assert 10 <= n_words(r.description) <= 30, r.description
        assert 2 <= n_words(r.creative_text) <= 8, r.creative_text
        assert r.title[0].isupper() or r.title[0].isdigit(), r.title


def test_text_diversity(ads: tuple[AdRecord, ...]) -> None:
    assert len({r.title for r in ads}) / N_ADS > 0.9
    assert len({r.description for r in ads}) / N_ADS > 0.9
    assert len({r.creative_text for r in ads}) > 200


def test_titles_in_one_category_are_not_one_sentence(ads: tuple[AdRecord, ...]) -> None:
    by_category: dict[str, list[str]] = defaultdict(list)
    for r in ads:
        by_category[category_of(r)].append(r.title)
    titles = max(by_category.values(), key=len)
    openings = Counter(" ".join(t.split()[:2]) for t in titles)
    assert openings.most_common(1)[0][1] < 0.2 * len(titles)


def test_titles_in_one_campaign_are_not_one_word_apart(ads: tuple[AdRecord, ...]) -> None:
    by_campaign: dict[str, list[set[str]]] = defaultdict(list)
    for r in ads:
        by_campaign[r.campaign_id].append(set(r.title.lower().split()))
    jaccard = [
        len(a & b) / len(a | b) for words in by_campaign.values() for a, b in pairwise(words)
    ]
    assert len(jaccard) > 1000
    assert sum(jaccard) / len(jaccard) < 0.3
    assert max(jaccard) < 0.9


# --- Users --------------------------------------------------------------------------------------


def test_users_are_deterministic(users: tuple[SampleUser, ...]) -> None:
    assert tuple(generate_users(N_USERS)) == users
    assert generate_users(50, seed=12) != list(users[:50])


def test_users_shape(users: tuple[SampleUser, ...]) -> None:
    assert [u.user_id for u in users] == [f"user-{i:05d}" for i in range(1, N_USERS + 1)]
    for u in users:
        assert 3 <= len(u.pins) <= 8
        assert 1 <= len(u.interests) <= 3
        assert len(set(u.interests)) == len(u.interests)
        assert set(u.interests) <= set(CATEGORIES)
        assert u.locale.endswith("-" + u.country)
        assert u.device in DEVICES
        for pin in u.pins:
            assert pin.title and pin.description
    assert {len(u.interests) for u in users} == {1, 2, 3}
    assert {len(u.pins) for u in users} == set(range(3, 9))


def test_pins_have_unique_ids_categories_and_engagement_times(
    users: tuple[SampleUser, ...],
) -> None:
    pins = [p for u in users for p in u.pins]
    assert len({p.pin_id for p in pins}) == len(pins)
    for u in users:
        assert {p.category for p in u.pins} == set(u.interests)  # every interest has a pin
    times = [p.engaged_at_unix_s for p in pins]
    assert min(times) >= SAMPLE_NOW_UNIX_S - 120 * 86_400 and max(times) < SAMPLE_NOW_UNIX_S
    assert len(set(times)) > 0.9 * len(times)


def test_pin_text() -> None:
    assert Pin("Boho ideas", "Loving it.").text() == "Boho ideas. Loving it."


def test_user_text_is_not_a_copy_of_ad_text(
    ads: tuple[AdRecord, ...], users: tuple[SampleUser, ...]
) -> None:
    ad_texts = {r.title for r in ads} | {r.description for r in ads}
    pin_texts = {p.title for u in users for p in u.pins} | {
        p.description for u in users for p in u.pins
    }
    assert not ad_texts & pin_texts
    assert len(pin_texts) > 0.9 * sum(2 * len(u.pins) for u in users)


# --- Files --------------------------------------------------------------------------------------


def test_write_sample_is_byte_identical_and_readable(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "a", n_ads=300, n_users=20)
    second = write_sample(tmp_path / "b", n_ads=300, n_users=20)
    assert [p.name for p in first] == ["catalog.jsonl", "users.jsonl"]
    for p, q in zip(first, second, strict=True):
        assert p.read_bytes() == q.read_bytes()
    catalog = read_catalog(first[0])
    assert catalog.records == generate_catalog(300)
    assert catalog.rejects == []
    assert read_users(first[1]) == generate_users(20)  # the default seeds go together
    pins_path = tmp_path / "a" / PINS_FILE
    assert pins_path.read_bytes() == (tmp_path / "b" / PINS_FILE).read_bytes()
    pins = read_pins(pins_path)
    expected = [(p.pin_id, p.title, p.description) for u in generate_users(20) for p in u.pins]
    assert [(p.pin_id, p.title, p.description) for p in pins.records] == expected


def test_write_sample_seed_changes_files(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a", n_ads=100, n_users=10, seed=1)
    b = write_sample(tmp_path / "b", n_ads=100, n_users=10, seed=2)
    assert a[0].read_bytes() != b[0].read_bytes()
    assert a[1].read_bytes() != b[1].read_bytes()
    assert read_users(a[1]) == generate_users(10, seed=5)


@pytest.mark.slow
def test_large_catalog_is_consistent() -> None:
    records = generate_catalog(100_000)
    assert len({r.ad_id for r in records}) == 100_000
    assert len({r.advertiser_id for r in records}) == round(100_000 / 12)
    assert len({category_of(r) for r in records}) == len(CATEGORIES)
    assert len({r.title for r in records}) > 0.85 * len(records)
