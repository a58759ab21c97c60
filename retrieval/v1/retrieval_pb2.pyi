from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveRequest(_message.Message):
    __slots__ = ("user_embedding", "k", "nprobe", "context", "exclude_ad_ids", "exclude_advertiser_ids", "max_per_advertiser", "interests", "engaged_pins", "context_pin", "max_interests", "recency_half_life_s", "index_version")
    USER_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_AD_IDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ADVERTISER_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_ADVERTISER_FIELD_NUMBER: _ClassVar[int]
    INTERESTS_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_PINS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_PIN_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERESTS_FIELD_NUMBER: _ClassVar[int]
    RECENCY_HALF_LIFE_S_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    user_embedding: _containers.RepeatedScalarFieldContainer[float]
    k: int
    nprobe: int
    context: UserContext
    exclude_ad_ids: _containers.RepeatedScalarFieldContainer[str]
    exclude_advertiser_ids: _containers.RepeatedScalarFieldContainer[str]
    max_per_advertiser: int
    interests: _containers.RepeatedCompositeFieldContainer[Interest]
    engaged_pins: _containers.RepeatedCompositeFieldContainer[EngagedPin]
    context_pin: ContextPin
    max_interests: int
    recency_half_life_s: int
    index_version: str
    def __init__(self, user_embedding: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., nprobe: _Optional[int] = ..., context: _Optional[_Union[UserContext, _Mapping]] = ..., exclude_ad_ids: _Optional[_Iterable[str]] = ..., exclude_advertiser_ids: _Optional[_Iterable[str]] = ..., max_per_advertiser: _Optional[int] = ..., interests: _Optional[_Iterable[_Union[Interest, _Mapping]]] = ..., engaged_pins: _Optional[_Iterable[_Union[EngagedPin, _Mapping]]] = ..., context_pin: _Optional[_Union[ContextPin, _Mapping]] = ..., max_interests: _Optional[int] = ..., recency_half_life_s: _Optional[int] = ..., index_version: _Optional[str] = ...) -> None: ...

class Interest(_message.Message):
    __slots__ = ("embedding", "weight")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    weight: float
    def __init__(self, embedding: _Optional[_Iterable[float]] = ..., weight: _Optional[float] = ...) -> None: ...

class EngagedPin(_message.Message):
    __slots__ = ("pin_id", "engaged_at_unix_s", "weight")
    PIN_ID_FIELD_NUMBER: _ClassVar[int]
    ENGAGED_AT_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    pin_id: str
    engaged_at_unix_s: int
    weight: float
    def __init__(self, pin_id: _Optional[str] = ..., engaged_at_unix_s: _Optional[int] = ..., weight: _Optional[float] = ...) -> None: ...

class ContextPin(_message.Message):
    __slots__ = ("pin_id", "text")
    PIN_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    pin_id: str
    text: str
    def __init__(self, pin_id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class UserContext(_message.Message):
    __slots__ = ("country", "locale", "device")
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    country: str
    locale: str
    device: str
    def __init__(self, country: _Optional[str] = ..., locale: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("ad_id", "advertiser_id", "campaign_id", "score", "interests", "shard")
    AD_ID_FIELD_NUMBER: _ClassVar[int]
    ADVERTISER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INTERESTS_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ad_id: str
    advertiser_id: str
    campaign_id: str
    score: float
    interests: _containers.RepeatedScalarFieldContainer[int]
    shard: int
    def __init__(self, ad_id: _Optional[str] = ..., advertiser_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., score: _Optional[float] = ..., interests: _Optional[_Iterable[int]] = ..., shard: _Optional[int] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("candidates", "index_version", "nprobe", "plan", "k_factor", "interests", "unknown_pin_ids", "shards_answered", "shard_count", "partial")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    K_FACTOR_FIELD_NUMBER: _ClassVar[int]
    INTERESTS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_PIN_IDS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_ANSWERED_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    index_version: str
    nprobe: int
    plan: str
    k_factor: int
    interests: _containers.RepeatedCompositeFieldContainer[InterestResult]
    unknown_pin_ids: _containers.RepeatedScalarFieldContainer[str]
    shards_answered: _containers.RepeatedScalarFieldContainer[int]
    shard_count: int
    partial: bool
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., index_version: _Optional[str] = ..., nprobe: _Optional[int] = ..., plan: _Optional[str] = ..., k_factor: _Optional[int] = ..., interests: _Optional[_Iterable[_Union[InterestResult, _Mapping]]] = ..., unknown_pin_ids: _Optional[_Iterable[str]] = ..., shards_answered: _Optional[_Iterable[int]] = ..., shard_count: _Optional[int] = ..., partial: _Optional[bool] = ...) -> None: ...

class InterestResult(_message.Message):
    __slots__ = ("weight", "quota", "contributed", "pin_ids")
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    PIN_IDS_FIELD_NUMBER: _ClassVar[int]
    weight: float
    quota: int
    contributed: int
    pin_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, weight: _Optional[float] = ..., quota: _Optional[int] = ..., contributed: _Optional[int] = ..., pin_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetIndexInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexInfo(_message.Message):
    __slots__ = ("index_version", "created_at", "dimension", "metric", "index_factory", "model", "ad_count", "active_count", "paused_count", "default_nprobe", "max_k", "manifest_json", "default_k_factor", "recall_control", "pin_count", "max_interests", "max_engaged_pins", "leaf", "leaves", "version_manifest_json")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INDEX_FACTORY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AD_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_NPROBE_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_K_FACTOR_FIELD_NUMBER: _ClassVar[int]
    RECALL_CONTROL_FIELD_NUMBER: _ClassVar[int]
    PIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ENGAGED_PINS_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    VERSION_MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    created_at: str
    dimension: int
    metric: str
    index_factory: str
    model: str
    ad_count: int
    active_count: int
    paused_count: int
    default_nprobe: int
    max_k: int
    manifest_json: str
    default_k_factor: int
    recall_control: bool
    pin_count: int
    max_interests: int
    max_engaged_pins: int
    leaf: LeafStatus
    leaves: _containers.RepeatedCompositeFieldContainer[LeafStatus]
    version_manifest_json: str
    def __init__(self, index_version: _Optional[str] = ..., created_at: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[str] = ..., index_factory: _Optional[str] = ..., model: _Optional[str] = ..., ad_count: _Optional[int] = ..., active_count: _Optional[int] = ..., paused_count: _Optional[int] = ..., default_nprobe: _Optional[int] = ..., max_k: _Optional[int] = ..., manifest_json: _Optional[str] = ..., default_k_factor: _Optional[int] = ..., recall_control: _Optional[bool] = ..., pin_count: _Optional[int] = ..., max_interests: _Optional[int] = ..., max_engaged_pins: _Optional[int] = ..., leaf: _Optional[_Union[LeafStatus, _Mapping]] = ..., leaves: _Optional[_Iterable[_Union[LeafStatus, _Mapping]]] = ..., version_manifest_json: _Optional[str] = ...) -> None: ...

class LeafStatus(_message.Message):
    __slots__ = ("shard", "shard_count", "serving_version", "loaded_versions", "address", "answering", "error")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SHARD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ANSWERING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    shard: int
    shard_count: int
    serving_version: str
    loaded_versions: _containers.RepeatedScalarFieldContainer[str]
    address: str
    answering: bool
    error: str
    def __init__(self, shard: _Optional[int] = ..., shard_count: _Optional[int] = ..., serving_version: _Optional[str] = ..., loaded_versions: _Optional[_Iterable[str]] = ..., address: _Optional[str] = ..., answering: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class LeafStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LookupIdsResponse(_message.Message):
    __slots__ = ("unknown_ad_ids", "unknown_campaign_ids", "unknown_advertiser_ids")
    UNKNOWN_AD_IDS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CAMPAIGN_IDS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ADVERTISER_IDS_FIELD_NUMBER: _ClassVar[int]
    unknown_ad_ids: _containers.RepeatedScalarFieldContainer[str]
    unknown_campaign_ids: _containers.RepeatedScalarFieldContainer[str]
    unknown_advertiser_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, unknown_ad_ids: _Optional[_Iterable[str]] = ..., unknown_campaign_ids: _Optional[_Iterable[str]] = ..., unknown_advertiser_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SwitchVersionRequest(_message.Message):
    __slots__ = ("index_version",)
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    def __init__(self, index_version: _Optional[str] = ...) -> None: ...

class EligibilityRequest(_message.Message):
    __slots__ = ("ad_ids", "campaign_ids", "advertiser_ids")
    AD_IDS_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_IDS_FIELD_NUMBER: _ClassVar[int]
    ADVERTISER_IDS_FIELD_NUMBER: _ClassVar[int]
    ad_ids: _containers.RepeatedScalarFieldContainer[str]
    campaign_ids: _containers.RepeatedScalarFieldContainer[str]
    advertiser_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ad_ids: _Optional[_Iterable[str]] = ..., campaign_ids: _Optional[_Iterable[str]] = ..., advertiser_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EligibilityResponse(_message.Message):
    __slots__ = ("ads_changed", "sequence", "index_version")
    ADS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    ads_changed: int
    sequence: int
    index_version: str
    def __init__(self, ads_changed: _Optional[int] = ..., sequence: _Optional[int] = ..., index_version: _Optional[str] = ...) -> None: ...

class Targeting(_message.Message):
    __slots__ = ("countries", "locales", "devices")
    COUNTRIES_FIELD_NUMBER: _ClassVar[int]
    LOCALES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    countries: _containers.RepeatedScalarFieldContainer[str]
    locales: _containers.RepeatedScalarFieldContainer[str]
    devices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, countries: _Optional[_Iterable[str]] = ..., locales: _Optional[_Iterable[str]] = ..., devices: _Optional[_Iterable[str]] = ...) -> None: ...

class Ad(_message.Message):
    __slots__ = ("ad_id", "advertiser_id", "campaign_id", "title", "description", "creative_text", "targeting", "status", "embedding")
    AD_ID_FIELD_NUMBER: _ClassVar[int]
    ADVERTISER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATIVE_TEXT_FIELD_NUMBER: _ClassVar[int]
    TARGETING_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ad_id: str
    advertiser_id: str
    campaign_id: str
    title: str
    description: str
    creative_text: str
    targeting: Targeting
    status: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, ad_id: _Optional[str] = ..., advertiser_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., creative_text: _Optional[str] = ..., targeting: _Optional[_Union[Targeting, _Mapping]] = ..., status: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("ads",)
    ADS_FIELD_NUMBER: _ClassVar[int]
    ads: _containers.RepeatedCompositeFieldContainer[Ad]
    def __init__(self, ads: _Optional[_Iterable[_Union[Ad, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("inserted", "updated", "sequence", "index_version")
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    inserted: int
    updated: int
    sequence: int
    index_version: str
    def __init__(self, inserted: _Optional[int] = ..., updated: _Optional[int] = ..., sequence: _Optional[int] = ..., index_version: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ad_ids",)
    AD_IDS_FIELD_NUMBER: _ClassVar[int]
    ad_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ad_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("index_version", "changed")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    changed: bool
    def __init__(self, index_version: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...
