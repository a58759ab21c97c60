from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveRequest(_message.Message):
    __slots__ = ("user_embedding", "k", "nprobe")
    USER_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    user_embedding: _containers.RepeatedScalarFieldContainer[float]
    k: int
    nprobe: int
    def __init__(self, user_embedding: _Optional[_Iterable[float]] = ..., k: _Optional[int] = ..., nprobe: _Optional[int] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("ad_id", "advertiser_id", "campaign_id", "score")
    AD_ID_FIELD_NUMBER: _ClassVar[int]
    ADVERTISER_ID_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ad_id: str
    advertiser_id: str
    campaign_id: str
    score: float
    def __init__(self, ad_id: _Optional[str] = ..., advertiser_id: _Optional[str] = ..., campaign_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("candidates", "index_version", "nprobe")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    index_version: str
    nprobe: int
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., index_version: _Optional[str] = ..., nprobe: _Optional[int] = ...) -> None: ...

class GetIndexInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexInfo(_message.Message):
    __slots__ = ("index_version", "created_at", "dimension", "metric", "index_factory", "model", "ad_count", "active_count", "paused_count", "default_nprobe", "max_k", "manifest_json")
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
    def __init__(self, index_version: _Optional[str] = ..., created_at: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[str] = ..., index_factory: _Optional[str] = ..., model: _Optional[str] = ..., ad_count: _Optional[int] = ..., active_count: _Optional[int] = ..., paused_count: _Optional[int] = ..., default_nprobe: _Optional[int] = ..., max_k: _Optional[int] = ..., manifest_json: _Optional[str] = ...) -> None: ...
