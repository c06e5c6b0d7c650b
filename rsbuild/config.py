"""Typed, validated run configuration (TOML).

The CLI builds a `Config` once (``load_config``) and hands it to the pipeline; stages receive
only the section they need. Validation errors name the TOML field and say what to change.
The resolved config is written next to the output (``Config.dump``).
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rsbuild.errors import ConfigError
from rsbuild.presets import CUSTOM, EE_DATASET_SCHEMES, LABEL_PRESETS, SCENE_PRESETS, label_preset_values, scene_preset_values

DATE_FORMS = "'YYYY-MM-DD' (or YYYY, YYYY-MM, or an RFC 3339 time such as 2024-06-01T00:00:00Z)"
URL_SCHEMES = ("http", "https", "file", "s3", "gs", "az", "abfs")


def parse_date(text: str) -> datetime:
    """One date or time of a config (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or RFC 3339), as UTC;
    ValueError names the accepted forms."""
    text = text.strip()
    try:
        if len(text) in (4, 7, 10) and text[:4].isdigit():
            parts = [int(p) for p in text.split("-")] + [1, 1]
            return datetime(parts[0], parts[1], parts[2], tzinfo=UTC)
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        reason = f" ({exc})" if "range" in str(exc) else ""
        raise ValueError(f"{text!r} is not a date{reason}; use {DATE_FORMS}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def check_interval(value: str) -> str:
    """A date or ``start/end`` interval (``..`` leaves one side open) whose start is not after its end."""
    parts = value.split("/")
    if len(parts) not in (1, 2) or not all(p.strip() for p in parts) or parts == ["..", ".."]:
        raise ValueError(f"use 'YYYY-MM-DD/YYYY-MM-DD' (or one date), not {value!r}")
    bounds = [None if p.strip() == ".." else parse_date(p) for p in parts]
    if len(bounds) == 2 and bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise ValueError(f"the interval {value!r} starts after its end; swap the two dates")
    return value


def check_location(value: str | None) -> str | None:
    """A URL with a known scheme and a host (http/https), or a path (checked to exist before a run)."""
    if value is None or "://" not in value:
        if value is not None and value.split(":", 1)[0] in ("http", "https"):
            raise ValueError(f"{value!r} is not a URL; write it as http://HOST/PATH")
        return value
    url = urlparse(value)
    if url.scheme not in URL_SCHEMES:
        raise ValueError(f"{value!r} has the URL scheme {url.scheme!r}; use {', '.join(URL_SCHEMES)} or a local path")
    if url.scheme in ("http", "https") and not url.hostname:
        raise ValueError(f"{value!r} has no host; write it as {url.scheme}://HOST/PATH")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PoisConfig(_Section):
    """Where the points of interest come from."""

    path: Path = Field(description="CSV, JSONL or Parquet table of points")
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    id_column: str = "id"
    lat_column: str = "lat"
    lon_column: str = "lon"
    id_precision: int = Field(5, ge=0, le=9, description="decimals of lat/lon hashed into a missing id")


class S3Config(_Section):
    """Where ``s3://`` scene hrefs live (``rsbuild.sources.object_store``): endpoint, addressing, keys.

    Keys come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or from ``credentials_file``
    (an AWS shared-credentials file); rsbuild never reads or writes the secret itself.
    """

    endpoint: str | None = Field(None, description="S3 endpoint URL, e.g. https://eodata.dataspace.copernicus.eu (none: AWS)")
    virtual_hosting: bool = Field(False, description="bucket.host/key addressing instead of host/bucket/key (path-style)")
    region: str | None = None
    anonymous: bool = Field(False, description="unsigned requests (public buckets only)")
    credentials_file: str | None = Field(None, description="AWS shared-credentials file holding the keys")
    profile: str | None = Field(None, description="profile of credentials_file (default: 'default')")


class ScenesConfig(_Section):
    """Scene search in a STAC API or a static catalog.

    ``preset`` names a public catalog (``rsbuild.presets.SCENE_PRESETS``) and fills ``catalog``,
    ``collection``, ``layout``, ``cloud_property`` and ``sign_hrefs`` where the config leaves them out.
    """

    preset: str = Field(CUSTOM, description=f"public catalog preset: {' | '.join(SCENE_PRESETS)}")
    catalog: str = Field(description="STAC API root URL, or path/URL of a static catalog.json")
    collection: str = "sentinel-2-l2a"
    datetime: str = Field("2024-06-01/2024-08-31", description="RFC 3339 interval start/end")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="STAC requests: seconds to connect")
    read_timeout_s: float = Field(30.0, gt=0, le=3600, description="STAC requests: seconds to wait for an answer")
    target_date: str | None = Field(None, description="ties in cloud cover go to the scene nearest this date")
    max_cloud_cover: float = Field(20.0, ge=0, le=100)
    cloud_property: str = "eo:cloud_cover"
    filter_mode: Literal["auto", "filter", "query", "client"] = "auto"
    layout: Literal["auto", "earth-search-v1", "earth-search-v0", "planetary-computer", "cdse"] = "auto"
    max_items: int = Field(50, ge=1, description="candidate scenes examined per POI")
    sign_hrefs: Literal["none", "planetary-computer"] = "none"
    s3: S3Config | None = Field(None, description="object store of s3:// hrefs (the cdse preset sets CDSE's endpoint)")
    aoi_cloud_candidates: int = Field(
        3, ge=0, description="best scenes whose AOI cloud share is measured to pick the clearest (0 = scene cloud cover only)"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill what the config leaves out from ``preset``; written settings win."""
        if not isinstance(data, dict) or not isinstance(data.get("preset", CUSTOM), str):
            return data  # field validation reports the wrong type
        preset = data.get("preset", CUSTOM)
        values = scene_preset_values(preset)
        if "catalog" not in values and not data.get("catalog"):
            named = ", ".join(name for name in SCENE_PRESETS if name != CUSTOM)
            raise ValueError(
                "scenes.catalog is required (a STAC API root URL or the path / URL of a catalog.json) "
                f"unless scenes.preset names a public catalog: {named}"
            )
        merged = {**values, **data}
        if isinstance(values.get("s3"), dict) and isinstance(data.get("s3"), dict):
            merged["s3"] = {**values["s3"], **data["s3"]}  # e.g. cdse's endpoint + the user's credentials_file
        return merged

    @field_validator("datetime")
    @classmethod
    def _interval(cls, value: str) -> str:
        return check_interval(value)

    @field_validator("target_date")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is not None:
            parse_date(value)
        return value

    @field_validator("catalog")
    @classmethod
    def _location(cls, value: str) -> str:
        return check_location(value) or value


class ImageryConfig(_Section):
    """How the AOI is read and cut into tiles."""

    aoi_size: int = Field(1024, ge=16, description="AOI side in native 10 m pixels")
    tile_size: int = Field(512, ge=8, description="native tile side in pixels")
    tile_stride: int = Field(256, ge=1, description="step between tiles in native pixels")
    output_size: int = Field(224, ge=8, description="side of the written chip in pixels")
    rgb_source: Literal["bands", "visual"] = "bands"
    stretch_percentiles: tuple[float, float] = (2.0, 98.0)
    cloud_classes: list[int] = Field(default_factory=lambda: [3, 8, 9, 10])
    max_tile_cloud: float = Field(0.5, ge=0, le=1, description="tiles with a larger cloud share are skipped")
    min_tile_valid: float = Field(0.5, ge=0, le=1, description="tiles with a smaller valid share are skipped")
    read_workers: int = Field(8, ge=1, le=256, description="concurrent network reads")
    cpu_workers: int = Field(2, ge=0, le=256, description="processes for tiling and PNG encoding (0 = in the reader threads)")
    http_connect_timeout_s: float = Field(10.0, gt=0, le=600, description="GDAL (imagery, SCL and label COGs): seconds to connect")
    http_timeout_s: float = Field(30.0, gt=0, le=3600, description="GDAL: seconds for one whole range request")

    @model_validator(mode="after")
    def _tiles_fit(self) -> ImageryConfig:
        if self.tile_size > self.aoi_size:
            raise ValueError(f"imagery.tile_size ({self.tile_size}) must not exceed imagery.aoi_size ({self.aoi_size})")
        lo, hi = self.stretch_percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError("imagery.stretch_percentiles must be two numbers 0 <= low < high <= 100")
        return self


class LabelsConfig(_Section):
    """The land-cover source aligned onto the chip grid.

    ``preset`` names a known source (``rsbuild.presets.LABEL_PRESETS``) and fills what the config
    leaves out. With ``source = "earthengine"`` the scheme follows ``ee_dataset`` (and the dataset
    follows the scheme when only the scheme is given); a scheme that contradicts it is an error.
    """

    preset: str = Field(CUSTOM, description=f"land-cover preset: {' | '.join(LABEL_PRESETS)}")
    source: Literal["cog", "stac", "earthengine"] = "cog"
    url: str | None = Field(None, description="label COG path or URL (source = 'cog')")
    catalog: str | None = Field(None, description="STAC API or catalog.json with label items (source = 'stac')")
    collection: str | None = None
    asset: str = "map"
    datetime: str | None = Field(None, description="which label items (source = 'stac'), e.g. '2021-07-01'; none = all")
    sign_hrefs: Literal["none", "planetary-computer"] = "none"
    scheme: Literal["esa_worldcover", "dynamic_world", "io_lulc"] = "esa_worldcover"
    version: str = ""
    downsample: Literal["majority", "nearest"] = "majority"
    ee_dataset: Literal["dynamic_world", "esa_worldcover"] | None = Field(None, description="source = 'earthengine'")
    ee_window_days: int = Field(30, ge=0, description="Dynamic World: mode of the labels over the scene date +- days")
    ee_project: str | None = Field(None, description="Cloud project (else EE_PROJECT, the key file or the credentials)")
    ee_credentials: Path | None = Field(None, description="service-account JSON key (else GOOGLE_APPLICATION_CREDENTIALS, then ADC)")
    ee_url: str | None = Field(None, description="Earth Engine endpoint, e.g. https://earthengine-highvolume.googleapis.com")
    ee_max_in_flight: int = Field(8, ge=1, le=256, description="concurrent computePixels requests (default quota: 40 per project)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill what the config leaves out from ``preset``; match Earth Engine dataset and scheme."""
        if not isinstance(data, dict) or not isinstance(data.get("preset", CUSTOM), str):
            return data  # field validation reports the wrong type
        values = label_preset_values(data.get("preset", CUSTOM))
        merged = {**values, **data}
        if merged.get("source") == "earthengine":
            merged.update(_earth_engine_dataset_and_scheme(data.get("ee_dataset", values.get("ee_dataset")), data.get("scheme")))
        return merged

    @field_validator("datetime")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        return check_interval(value) if value is not None else None

    @field_validator("url", "catalog", "ee_url")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        return check_location(value)

    @model_validator(mode="after")
    def _source_fields(self) -> LabelsConfig:
        if self.source == "cog" and not self.url:
            raise ValueError(
                "labels.url is required when labels.source = 'cog' (path or URL of a land-cover COG); "
                f"or set labels.preset to one of {', '.join(name for name in LABEL_PRESETS if name != CUSTOM)}"
            )
        if self.source == "stac" and not (self.catalog and self.collection):
            raise ValueError("labels.catalog and labels.collection are required when labels.source = 'stac'")
        return self


def _earth_engine_dataset_and_scheme(dataset: Any, scheme: Any) -> dict[str, Any]:
    """``ee_dataset`` and ``scheme`` made consistent: each derived from the other when missing
    (Dynamic World when neither is given); a contradiction names ``labels.scheme``."""
    if dataset is None:
        if scheme is None:
            dataset = "dynamic_world"
        else:
            dataset = next((name for name, classes in EE_DATASET_SCHEMES.items() if classes == scheme), None)
            if dataset is None:
                raise ValueError(
                    f"labels.scheme = {scheme!r} has no Earth Engine dataset; with labels.source = 'earthengine' "
                    f"set labels.scheme to one of {', '.join(sorted(set(EE_DATASET_SCHEMES.values())))} or leave it out"
                )
    expected = EE_DATASET_SCHEMES.get(dataset) if isinstance(dataset, str) else None
    if expected is None:
        return {"ee_dataset": dataset}  # not an Earth Engine dataset: the field itself says so
    if scheme is not None and scheme != expected:
        raise ValueError(
            f"labels.scheme = {scheme!r} does not match labels.ee_dataset = {dataset!r}, whose classes are "
            f"{expected!r}; set labels.scheme = {expected!r} or leave it out"
        )
    return {"ee_dataset": dataset, "scheme": expected}


class StatsConfig(_Section):
    """Label statistics."""

    min_component_pixels: int = Field(30, ge=1, description="smaller components fold into 'small patches'")
    max_components: int = Field(20, ge=1, description="largest components kept per tile")
    elongation_threshold: float = Field(3.0, gt=1)


class SplitsConfig(_Section):
    """Train / validation / test assignment."""

    by: Literal["poi", "cell"] = "poi"
    cell_size_deg: float = Field(0.1, gt=0)
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    salt: str = ""

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError("splits.fractions must be three non-negative numbers summing to 1, e.g. [0.8, 0.1, 0.1]")
        return value


class OutputConfig(_Section):
    """Shards, folders and JSONL."""

    shard_max_samples: int = Field(1000, ge=1)
    shard_max_bytes: int = Field(1_000_000_000, ge=1024)
    write_masks: bool = True
    bands: Literal["rgb", "all"] = Field(
        "rgb",
        description='"all": also KEY.bands.tif (the 12 Sentinel-2 L2A bands as float32 reflectance on the 10 m tile '
        "grid, 20/60 m bands by nearest neighbour) and NDVI / NDWI / NBR in the stats",
    )
    png_compress_level: int = Field(1, ge=0, le=9)
    folder_file_cap: int = Field(8000, ge=1, description="most files in one leaf folder (sNNNNN/ segments)")
    unit_pois: int = Field(500, ge=1, description="POI rows per unit of work (resume granularity)")
    write_bbox_overlays: bool = False
    write_images: bool = True
    write_plots: bool = Field(True, description="draw distribution plots into OUT/plots and the card")
    max_failure_share: float = Field(
        0.5, ge=0, le=1, description="exit 1 when a larger share of the POI rows gives no tile (rejected, no scene, unreadable)"
    )
    license: str = "cc-by-4.0"
    pretty_name: str = "rsbuild dataset"
    synthetic: bool = Field(False, description="imagery and labels are generated (the demo): the card claims no source licences")


VLLM_RESERVED_ARGS = frozenset({"model", "seed", "enable_prefix_caching", "tokenizer"})


class VllmConfig(_Section):
    """Engine settings of the in-process vLLM (``captions.engine = "vllm"``).

    Unset (None) fields take vLLM's own default on a GPU; without a GPU rsbuild picks the CPU
    build's safe values (float32, eager mode, no chunked prefill: seeded prompts split across
    steps crash the CPU worker).
    """

    dtype: str | None = Field(None, description="auto, float16, bfloat16 or float32")
    max_model_len: int | None = Field(None, ge=64, description="context length (prompt + caption)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="share of each GPU's memory vLLM may take")
    enforce_eager: bool | None = None
    quantization: str | None = Field(None, description="e.g. awq, gptq, fp8")
    enable_chunked_prefill: bool | None = None
    max_num_seqs: int | None = Field(None, ge=1, description="sequences in one batch (vLLM's default: 256-1024 by GPU)")
    kv_cache_memory_bytes: int | None = Field(None, ge=1 << 20, description="KV cache size; CPU default 1 GiB")
    enable_prefix_caching: bool = Field(True, description="compute the shared prompt head once")
    extra: dict[str, Any] = Field(default_factory=dict, description="other vllm engine arguments, passed as they are")

    @field_validator("extra")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(VLLM_RESERVED_ARGS & set(value))
        if clash:
            raise ValueError(
                f"captions.vllm.extra may not set {', '.join(clash)}: rsbuild sets them "
                "(model: captions.models, seed: captions.seed, enable_prefix_caching: captions.vllm.enable_prefix_caching)"
            )
        return value


DERIVED_TASKS = ("vqa", "referring", "masks")  # rows computed from the stats, no engine involved


class CaptionsConfig(_Section):
    """Caption engines and tasks."""

    engine: Literal["template", "openai", "local", "vllm"] = "template"
    models: list[str] = Field(default_factory=list, description="annotator models; empty = engine default")
    server_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    prompts_dir: Path | None = None
    tasks: list[Literal["area", "linear", "class", "revise", "vqa", "referring", "masks"]] = Field(
        default_factory=lambda: ["area", "class"],  # type: ignore[arg-type]
        description="LLM captions (area, linear, class, revise) and rows derived from the stats (vqa, referring, masks)",
    )
    paraphrases: int = Field(0, ge=0, le=4)
    vqa_paraphrase: bool = Field(False, description="with task vqa and an LLM engine: the LLM rewords each tile's VQA questions "
                                 "(one request per tile); each rewording is checked, answers stay exact")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(160, ge=8)
    concurrency: int = Field(256, ge=1, description="requests open at once per server (a vLLM server batches hundreds)")
    max_samples_in_flight: int | None = Field(None, ge=1, description="samples held by the caption stage; default 4 x concurrency")
    model_urls: dict[str, str] = Field(default_factory=dict, description="engine 'openai': base URL per model (one server per model)")
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    timeout_s: float = Field(120.0, gt=0, description="LLM server: seconds to wait for one answer")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="LLM server: seconds to connect")
    retries: int = Field(3, ge=0)
    speculative_reasks: bool = Field(True, description="with free request slots and nothing new to ask (the end of a run), also ask the next attempts of captions still being checked; the kept texts are the same either way")
    max_check_attempts: int = Field(3, ge=1, description="generations per caption before giving up on the check")
    best_of: int = Field(1, ge=1, le=16, description="candidates asked per caption in one request (vLLM n=k: one prefill); the first that passes the check is kept")
    constrained: bool = Field(False, description="engines local, vllm, openai (a vLLM server): decode area/class captions under a grammar that binds each class to its measured share and place")
    varied: bool = Field(False, description="with constrained: the grammar offers more verbs, hedges, places and two sentence forms (each still states its class's own share and place)")
    class_min_share: float = Field(0.05, ge=0, le=1)
    max_class_rows: int = Field(3, ge=0)
    seed: int = 0

    @property
    def caption_tasks(self) -> list[str]:
        """The tasks an engine writes (the rest are derived from the statistics)."""
        return [t for t in self.tasks if t not in DERIVED_TASKS] + (["vqa_paraphrase"] if self.vqa_paraphrase else [])

    def sampling(self) -> dict[str, Any]:
        """The sampling settings every LLM request carries (recorded with each annotation)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}

    @field_validator("server_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not a URL; write it as http://HOST:PORT/v1")
        return check_location(value)

    @model_validator(mode="after")
    def _one_vllm_model(self) -> CaptionsConfig:
        if self.engine == "vllm" and len(self.models) > 1:
            raise ValueError(
                f"captions.models lists {len(self.models)} models, but captions.engine = 'vllm' runs one model per "
                "process (each vLLM engine reserves most of a GPU). Serve each model with `vllm serve` on its own GPU "
                "and use captions.engine = 'openai' with captions.model_urls = {model = 'http://HOST:PORT/v1', ...}"
            )
        if self.vqa_paraphrase and ("vqa" not in self.tasks or self.engine == "template"):
            raise ValueError("captions.vqa_paraphrase = true rewords the VQA questions with an LLM: add 'vqa' to "
                             "captions.tasks and set captions.engine to local, vllm or openai (the template engine "
                             "writes no paraphrases), or set captions.vqa_paraphrase = false")
        if self.constrained and self.engine == "template":
            raise ValueError("captions.constrained = true decodes an LLM under the caption grammar, but captions.engine = "
                             "'template' writes its captions without one: set captions.engine to local, vllm or openai, "
                             "or set captions.constrained = false")
        if self.varied and not self.constrained:
            raise ValueError("captions.varied = true widens the caption grammar's wording, but captions.constrained = false "
                             "decodes without a grammar: set captions.constrained = true, or captions.varied = false")
        unknown = sorted(set(self.model_urls) - set(self.models))
        if unknown:
            raise ValueError(f"captions.model_urls names {', '.join(unknown)}, which captions.models does not list; add them there")
        return self


class StillsConfig(_Section):
    """Optional overhead context stills: one Mapbox Static Images still per POI with a scene.

    The access token is read from the environment variable ``token_env`` only, never from here.
    """

    mapbox: bool = Field(False, description="fetch one Mapbox still per POI into mapbox_stills/")
    base_url: str = Field("https://api.mapbox.com", description="Static Images API root")
    style: str = Field("mapbox/satellite-v9", description="'user/style_id'")
    zoom: float = Field(16.0, ge=0, le=22)
    size: int = Field(512, ge=1, le=1280, description="width and height in pixels (the API's largest: 1280)")
    retina: bool = Field(False, description="@2x: twice the pixels for the same extent")
    token_env: str = Field("MAPBOX_ACCESS_TOKEN", description="environment variable holding the access token")

    @field_validator("style")
    @classmethod
    def _user_and_style(cls, value: str) -> str:
        if value.count("/") != 1 or not all(value.split("/")):
            raise ValueError("stills.style must be 'user/style_id', e.g. 'mapbox/satellite-v9'")
        return value


class Config(_Section):
    """A whole run."""

    pois: PoisConfig
    scenes: ScenesConfig
    imagery: ImageryConfig = Field(default_factory=ImageryConfig)
    labels: LabelsConfig
    stats: StatsConfig = Field(default_factory=StatsConfig)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    captions: CaptionsConfig = Field(default_factory=CaptionsConfig)
    stills: StillsConfig = Field(default_factory=StillsConfig)

    def dump(self) -> dict[str, Any]:
        """JSON-able resolved config (paths as strings)."""
        return self.model_dump(mode="json")


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required but missing; add it to the config (see `rsbuild init` for an example)"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known setting; check its spelling (see `rsbuild init` for all settings)"
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a config mapping; relative paths resolve against ``base_dir``."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
    if base_dir is not None:
        _resolve_paths(cfg, base_dir)
    return cfg


def _resolve_paths(cfg: Config, base_dir: Path) -> None:
    if not cfg.pois.path.is_absolute():
        cfg.pois.path = (base_dir / cfg.pois.path).resolve()
    if cfg.captions.prompts_dir is not None and not cfg.captions.prompts_dir.is_absolute():
        cfg.captions.prompts_dir = (base_dir / cfg.captions.prompts_dir).resolve()
    if cfg.labels.ee_credentials is not None:
        key_file = cfg.labels.ee_credentials.expanduser()
        cfg.labels.ee_credentials = key_file if key_file.is_absolute() else (base_dir / key_file).resolve()
    for section, name in ((cfg.scenes, "catalog"), (cfg.labels, "url"), (cfg.labels, "catalog")):
        value = getattr(section, name)
        if value and "://" not in value and not Path(value).is_absolute():
            setattr(section, name, str((base_dir / value).resolve()))


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file; relative paths resolve against its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}; pass an existing file with --config") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return config_from_dict(data, source=str(path), base_dir=path.parent.resolve())


EXAMPLE_CONFIG = """\
# rsbuild configuration. Relative paths resolve against this file's folder.
# Every setting below shows its default unless marked "required".

[pois]
path = "pois.csv"            # required: CSV, JSONL or Parquet with one point per row
format = "auto"              # auto | csv | jsonl | parquet (auto: from the file extension)
id_column = "id"             # a missing id gets a stable hash of the rounded coordinates
lat_column = "lat"
lon_column = "lon"

[scenes]
preset = "earth-search-c1"   # earth-search-c1 | earth-search-v1 | planetary-computer | cdse | custom (the default);
                             # a preset fills catalog, collection, layout, cloud_property and sign_hrefs,
                             # and any of them written here wins (e.g. a local mirror's catalog URL).
                             # earth-search-c1 (Sentinel-2 Collection 1) is Element 84's maintained collection:
                             # ESA's DN unchanged, scale/offset declared right on every item, no credentials.
                             # earth-search-v1 (the older sentinel-2-l2a) flags scenes whose -1000 DN offset
                             # Element 84 removed (earthsearch:boa_offset_applied), and some scenes flagged
                             # false had it removed too, which no metadata reveals.
# catalog = "https://earth-search.aws.element84.com/v1"  # required with preset = "custom": STAC API root or catalog.json
# collection = "sentinel-2-l2a"
datetime = "2024-06-01/2024-08-31"
# target_date = "2024-07-15" # ties in cloud cover go to the scene nearest this date
max_cloud_cover = 20.0       # percent, scene level
filter_mode = "auto"         # auto (from the server's conformance) | filter | query | client
# layout = "auto"            # auto | earth-search-v1 | earth-search-v0 | planetary-computer | cdse
# cloud_property = "eo:cloud_cover"
# sign_hrefs = "none"        # none | planetary-computer (pip install 'rsbuild[pc]')
# s3 = { endpoint = "https://eodata.dataspace.copernicus.eu" }  # where s3:// hrefs live (preset cdse sets this);
#                            # keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or credentials_file = "~/.cdse-keys",
#                            # virtual_hosting = false (path-style), anonymous = true only for public buckets
aoi_cloud_candidates = 3     # best scenes whose cloud share over the AOI is read to pick the clearest (0 = off)
connect_timeout_s = 10.0     # STAC requests: seconds to connect, and to wait for an answer (each try; failures
read_timeout_s = 30.0        # are retried with backoff, then recorded as transient: --retry-failed redoes them)

[imagery]
aoi_size = 1024              # native 10 m pixels around each POI
tile_size = 512              # native tile side
tile_stride = 256            # step between tiles
output_size = 224            # written chip side
rgb_source = "bands"         # bands (B04/B03/B02) | visual
stretch_percentiles = [2.0, 98.0]
cloud_classes = [3, 8, 9, 10]  # SCL classes masked as cloud / shadow
max_tile_cloud = 0.5
min_tile_valid = 0.5
read_workers = 8             # concurrent network reads
cpu_workers = 2              # processes for tiling / PNG encoding (0 = in the reader threads)
http_connect_timeout_s = 10.0  # GDAL reads of imagery, SCL and label COGs: seconds to connect,
http_timeout_s = 30.0        # and for one whole range request (GDAL_HTTP_CONNECTTIMEOUT / GDAL_HTTP_TIMEOUT)

[labels]
source = "cog"               # cog (url below) | stac (catalog + collection) | earthengine (ee_* below)
url = "worldcover.tif"       # required for source = "cog"
# preset = "custom"          # esa-worldcover-pc | io-lulc-pc (Planetary Computer, signed) |
                             # dynamic-world-ee | esa-worldcover-ee (Earth Engine) | custom: fills
                             # source, catalog, collection, asset, scheme, ... ; settings here win
scheme = "esa_worldcover"    # esa_worldcover | dynamic_world | io_lulc (earthengine: follows ee_dataset)
downsample = "majority"      # majority | nearest
# source = "stac": catalog, collection, asset = "map", datetime = "2021-07-01" (which items; none = all),
#                  sign_hrefs = "none" | "planetary-computer"
# source = "earthengine" (pip install 'rsbuild[ee]'):
# ee_dataset = "dynamic_world"   # dynamic_world | esa_worldcover
# ee_window_days = 30            # Dynamic World: mode of the labels over the scene date +- this many days
# ee_credentials = "ee-key.json" # service-account key; else GOOGLE_APPLICATION_CREDENTIALS, then application default credentials
# ee_project = "my-project"      # else EE_PROJECT, the key file's project or the credentials' quota project
# ee_url = "https://earthengine-highvolume.googleapis.com"  # default: the standard endpoint
# ee_max_in_flight = 8           # concurrent computePixels requests (Earth Engine's default quota: 40 per project)

[stats]
min_component_pixels = 30
max_components = 20
elongation_threshold = 3.0

[splits]
by = "poi"                   # poi | cell (neighbouring POIs share a split)
cell_size_deg = 0.1
fractions = [0.8, 0.1, 0.1]

[output]
shard_max_samples = 1000
shard_max_bytes = 1000000000
write_masks = true
bands = "rgb"                # "all": + KEY.bands.tif (12 L2A bands, float32 reflectance, 10 m) and NDVI/NDWI/NBR in stats
png_compress_level = 1
folder_file_cap = 8000
unit_pois = 500              # POI rows per unit of work: a rerun resumes at the first unfinished unit
max_failure_share = 0.5      # exit 1 when more of the POI rows give no tile (rejected, no scene, unreadable)
write_bbox_overlays = false
license = "cc-by-4.0"

[captions]
engine = "template"          # template | openai | local | vllm
# server_url = "http://127.0.0.1:8000/v1"   # for engine = "openai"
api_key_env = "OPENAI_API_KEY"  # the key itself is read from this environment variable only
tasks = ["area", "class"]     # area | linear | class | revise; derived rows: vqa | referring | masks
paraphrases = 0
vqa_paraphrase = false       # with "vqa" in tasks and an LLM engine: the LLM rewords the VQA questions (checked; answers stay exact)
class_min_share = 0.05
max_class_rows = 3
concurrency = 256            # requests open at once per server: a vLLM server batches hundreds (llama.cpp: its --n_parallel)
timeout_s = 120.0            # engine "openai": seconds to wait for one answer, and to connect
connect_timeout_s = 10.0
best_of = 1                  # candidates per caption in one request (n=k, one prefill); the first that passes the check is kept (4 helps small models)
speculative_reasks = true    # idle slots at the end of a run ask the next attempts ahead (same kept texts, shorter tail)
constrained = false          # engines local, vllm, openai (a vLLM server): area/class captions decoded under a grammar binding each class to its share and place
varied = false               # with constrained: more verbs, hedges, places and two sentence forms (the facts stay bound)
# max_samples_in_flight = 1024   # samples the caption stage holds (default 4 x concurrency); bounds memory
# models = ["Qwen/Qwen2.5-7B-Instruct"]   # annotator models; empty = the engine's default
# model_urls = { "Qwen/Qwen2.5-7B-Instruct" = "http://127.0.0.1:8000/v1" }   # engine "openai": one server per model

[captions.vllm]              # engine = "vllm" (in-process); unset = vLLM's default, or CPU-safe values without a GPU
# dtype = "bfloat16"         # CPU default: float32 (2-4x faster than bf16 on CPUs without AMX)
# max_model_len = 4096
# tensor_parallel_size = 1
# gpu_memory_utilization = 0.9
# max_num_seqs = 512
# enforce_eager = false      # CPU default: true
# enable_chunked_prefill = true   # CPU default: false (seeded prompts split across steps crash the CPU worker)
# quantization = "awq"
# kv_cache_memory_bytes = 4294967296   # CPU default: 1 GiB
enable_prefix_caching = true
# extra = { swap_space = 8 }  # any other vLLM engine argument

[stills]
mapbox = false               # true: one overhead still per POI with a scene into mapbox_stills/, plus its JSONL row
base_url = "https://api.mapbox.com"
style = "mapbox/satellite-v9"  # 'user/style_id'; raster styles answer JPEG, vector styles PNG
zoom = 16.0
size = 512                   # pixels per side (at most 1280)
retina = false               # @2x: twice the pixels for the same extent
token_env = "MAPBOX_ACCESS_TOKEN"  # the token itself is read from this environment variable only
"""


def write_example(path: Path) -> None:
    """Write the commented example config (refuses to overwrite)."""
    if path.exists():
        raise ConfigError(f"{path} already exists; choose another path or remove it first")
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
