"""The fetch stage: POIs → Samples (chip PNG, label mask PNG, metadata, statistics) or Failures.

Per POI: find a scene, snap an AOI to the scene's 10 m grid, read the bands, SCL and labels onto
that grid concurrently (a bounded thread pool: network I/O), stretch RGB over the whole AOI, cut
tiles, downsample, measure. POIs are processed a few at a time and come out in input order, so
the output is deterministic and memory is bounded by the number of POIs in flight.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rsbuild.chips import bands
from rsbuild.chips.downsample import downsample_labels, downsample_mask, downsample_rgb, shared_output_size
from rsbuild.chips.imagery import cloud_mask, rgb_from_bands, rgb_from_visual
from rsbuild.chips.masks import component_masks
from rsbuild.chips.splits import assign_split, split_key_for
from rsbuild.chips.stats import compute_stats
from rsbuild.concurrency import die_with, die_with_parent, ordered_map
from rsbuild.config import Config
from rsbuild.errors import SampleError
from rsbuild.grid import NATIVE_RESOLUTION_M, TileWindow, aoi_grid, bbox_wgs84, center_wgs84, sub_grid, tile_windows
from rsbuild.records import Failure, Grid, Poi, Sample, Scene, TileStats, sample_key
from rsbuild.schemes import NODATA_INDEX, get_scheme
from rsbuild.sources import raster_io
from rsbuild.sources.labels.base import LabelSource
from rsbuild.version import __version__


class SceneFinder(Protocol):
    """What the fetch stage needs from scene search (rsbuild.sources.stac.SceneSearcher)."""

    def rank(self, poi: Poi, aoi_half_m: float, limit: int) -> list[Scene] | Failure: ...


@dataclass
class AoiRead:
    """Raw arrays read for one AOI (the I/O stage's output, pickled to the CPU stage)."""

    poi: Poi
    scene: Scene
    grid: Grid
    arrays: dict[str, np.ndarray]  # red/green/blue or visual, optional scl, labels (raw codes)


@dataclass
class AoiArrays:
    """One AOI prepared for tiling, on the AOI grid."""

    grid: Grid
    rgb: np.ndarray  # (H, W, 3) uint8, stretched over the AOI
    valid: np.ndarray  # (H, W) bool: image data present
    labels: np.ndarray  # (H, W) uint8 class index, NODATA_INDEX where unknown / nodata
    unknown: np.ndarray  # (H, W) bool: label code outside the scheme
    cloud: np.ndarray | None  # (H, W) bool, None without SCL
    stretch: list[list[float]]
    aoi_cloud_share: float | None = None  # cloudy share of the AOI's image pixels (SCL)
    small: SmallAoi | None = None  # the whole AOI downsampled once, when tiles are slices of it
    spectral: np.ndarray | None = None  # (12, H, W) float32 reflectance of every L2A band (output.bands = "all")


@dataclass
class SmallAoi:
    """The AOI at output resolution: each tile's downsampled arrays are slices of these."""

    scale: tuple[int, int]  # output pixels per ``scale[1]`` source pixels: offset * scale[0] // scale[1]
    rgb: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    cloud: np.ndarray | None

    def window(self, window: TileWindow, size: int) -> tuple[slice, slice]:
        """Rows and columns of one tile on the small grid."""
        out, source = self.scale
        row, col = window.row_off * out // source, window.col_off * out // source
        return slice(row, row + size), slice(col, col + size)


def one_native_thread(main_pid: int | None = None) -> None:
    """Worker initializer: die with the parent and with the main process ``main_pid`` (also on
    SIGKILL; a forkserver worker's parent is the forkserver), and one BLAS/OpenMP thread per
    process (the processes are the parallelism; idle BLAS threads spinning on every core cost
    ~40 % of tiling CPU, measured in scripts/bench.py)."""
    die_with_parent()
    if main_pid is not None:
        die_with(main_pid)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"  # for libraries loaded after this point
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # for libraries already loaded (e.g. a preloaded numpy)


# PNG settings, measured on the benchmark's 224 px chips (scripts/bench.py world, 27 tiles, level 1,
# one process, load ~2): every row "Up"-filtered (type 2), zlib's run-length strategy, written by
# numpy + zlib: 2.9 ms / 78.8 KiB per chip, against 6.0 ms / 75.9 KiB for Pillow's per-row adaptive
# filters (same zlib settings); Paeth on every row 3.8 ms / 76.9 KiB, Sub 2.8 ms / 79.3 KiB, no
# filter 2.5 ms / 131 KiB; the default strategy 4.0 ms / 90 KiB (RLE suits filtered rows). zlib's
# Huffman coding is most of what is left (~2 ms; ISA-L would take 0.8 ms for 85 KiB, a new
# dependency for ~11 ms per AOI). Masks are palette PNGs, never filtered (as Pillow writes them):
# 0.23 ms / 3.7 KiB against Pillow's 0.29 ms. Decoded pixels are identical whatever the settings.
PNG_ZLIB_STRATEGY = zlib.Z_RLE
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_UP, _PNG_NONE = 2, 0


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_rows(array: np.ndarray, filtered: bool) -> bytes:
    """The scanlines of a uint8 (H, W) or (H, W, C) array, each led by its filter type: "Up"
    (each byte minus the byte above it, modulo 256) when ``filtered``, else none."""
    rows = np.ascontiguousarray(array).reshape(array.shape[0], -1)
    out = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = _PNG_UP if filtered else _PNG_NONE
    out[:, 1:] = rows
    if filtered:
        np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # uint8 arithmetic wraps: modulo 256
    return out.tobytes()


def encode_png(array: np.ndarray, compress_level: int, palette: np.ndarray | None = None) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array (deterministic: no timestamps). With a (256, 3)
    ``palette`` an (H, W) array becomes a palette PNG: pixel values stay the class indices (what
    loaders read), and viewers show the scheme's colours instead of near-black greys."""
    height, width = array.shape[:2]
    colour = 3 if palette is not None else 0 if array.ndim == 2 else 2  # palette, grey, RGB
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, PNG_ZLIB_STRATEGY)
    pixels = compressor.compress(_png_rows(np.asarray(array, dtype=np.uint8), filtered=palette is None))
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))]
    if palette is not None:
        parts.append(_png_chunk(b"PLTE", palette.astype(np.uint8).tobytes()))
    parts += [_png_chunk(b"IDAT", pixels + compressor.flush()), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


class Fetcher:
    """Runs the fetch stage: I/O in a bounded thread pool, tiling in worker processes.

    ``imagery.cpu_workers = 0`` tiles in the calling threads (no processes), which is what tests
    and small runs want; the output is identical either way.
    """

    def __init__(self, cfg: Config, searcher: SceneFinder, label_source: LabelSource) -> None:
        self.cfg = cfg
        self.searcher = searcher
        self.labels = label_source
        workers = cfg.imagery.read_workers
        self.read_pool = ThreadPoolExecutor(workers, thread_name_prefix="rsbuild-read")
        # enough POIs in flight that the tiling processes never wait on the network (latency hiding)
        self.pois_in_flight = max(2, workers)
        self.poi_pool = ThreadPoolExecutor(self.pois_in_flight, thread_name_prefix="rsbuild-poi")
        self.tiler = Tiler(cfg, label_source.describe(), label_source.fill_code)
        self.cpu_pool: Executor | None = None
        if cfg.imagery.cpu_workers > 0:
            context = multiprocessing.get_context("forkserver")
            self.cpu_pool = ProcessPoolExecutor(cfg.imagery.cpu_workers, mp_context=context, initializer=one_native_thread,
                                                initargs=(os.getpid(),))

    def close(self) -> None:
        """Stop the workers."""
        self.read_pool.shutdown(wait=True, cancel_futures=True)
        self.poi_pool.shutdown(wait=True, cancel_futures=True)
        if self.cpu_pool is not None:
            self.cpu_pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, pois: Iterable[Poi]) -> Iterator[tuple[Poi, list[Sample | Failure]]]:
        """Each POI with its samples and failures, in input order."""
        reads = ordered_map(self.read_poi, pois, self.poi_pool, self.pois_in_flight)
        if self.cpu_pool is None:
            yield from ((read.poi, self._finish(read)) for read in reads)
            return
        pending: deque[tuple[Poi, Future[list[Sample | Failure]]]] = deque()
        limit = 2 * self.cfg.imagery.cpu_workers
        for read in reads:
            if isinstance(read, AoiRead):
                pending.append((read.poi, self.cpu_pool.submit(self.tiler, read)))
            else:
                pending.append((read.poi, _done(read.failures)))
            while len(pending) > limit:
                poi, future = pending.popleft()
                yield poi, future.result()
        while pending:
            poi, future = pending.popleft()
            yield poi, future.result()

    def _finish(self, read: AoiRead | PoiFailed) -> list[Sample | Failure]:
        return self.tiler(read) if isinstance(read, AoiRead) else read.failures

    # -- I/O stage -------------------------------------------------------------------------
    def read_poi(self, poi: Poi) -> AoiRead | PoiFailed:
        """Find the scene and read the AOI; a failure here stops only this POI."""
        half_m = self.cfg.imagery.aoi_size * NATIVE_RESOLUTION_M / 2
        try:
            ranked = self.searcher.rank(poi, half_m, self.cfg.scenes.aoi_cloud_candidates)
        except SampleError as exc:  # a search error for one POI is a bad sample, not a bad run
            return PoiFailed(poi, [Failure("search", "search_error", poi.poi_id, detail=str(exc)[:300],
                                             transient=exc.transient)])
        if isinstance(ranked, Failure):
            return PoiFailed(poi, [ranked])
        try:
            scene, scl = self.clearest(poi, ranked)
            return self.read_aoi(poi, scene, scl)
        except SampleError as exc:
            return PoiFailed(poi, [Failure("read", "read_error", poi.poi_id, detail=str(exc)[:300],
                                             transient=exc.transient)])

    def clearest(self, poi: Poi, ranked: list[Scene]) -> tuple[Scene, np.ndarray | None]:
        """Among the best scenes by scene-level cloud, the one whose SCL shows the fewest clouds
        over this AOI (ties keep the search's order), with that SCL read (reused for the cloud
        mask, so it is not read twice). One scene: no extra read, no SCL yet."""
        candidates = [scene for scene in ranked if "scl" in scene.assets]
        if len(ranked) < 2 or len(candidates) < 2:
            return ranked[0], None
        futures = [self.read_pool.submit(self._read_scl, poi, scene) for scene in candidates]
        scls = [future.result() for future in futures]
        shares = [self._aoi_cloud_share(scl) for scl in scls]
        best = min(range(len(candidates)), key=lambda i: (shares[i], i))
        return candidates[best], scls[best]

    def _read_scl(self, poi: Poi, scene: Scene) -> np.ndarray:
        return raster_io.read_on_grid(scene.assets["scl"].href, self._grid(poi, scene), fill=0)

    def _aoi_cloud_share(self, scl: np.ndarray) -> float:
        """Cloudy share of the observed (non-zero) SCL pixels, 1.0 when none is observed."""
        if scl.dtype != np.uint8:
            observed = scl != 0
            return float(cloud_mask(scl[observed], self.cfg.imagery.cloud_classes).mean()) if observed.any() else 1.0
        counts = np.bincount(scl.ravel(), minlength=256)  # one pass, no gathered copy (the same share)
        observed_pixels = int(scl.size - counts[0])
        if observed_pixels == 0:
            return 1.0
        classes = sorted({c for c in self.cfg.imagery.cloud_classes if 0 < c < 256})
        return int(counts[classes].sum()) / observed_pixels

    def _grid(self, poi: Poi, scene: Scene) -> Grid:
        img = self.cfg.imagery
        crs, transform = scene.crs, scene.transform
        if crs is None or transform is None:
            reference = scene.assets["visual" if img.rgb_source == "visual" else "red"]
            info = raster_io.raster_info(reference.href)
            crs, transform = crs or info.grid.crs, transform or info.grid.transform
        return aoi_grid(poi, crs, img.aoi_size, transform)

    def read_aoi(self, poi: Poi, scene: Scene, scl: np.ndarray | None = None) -> AoiRead:
        """Read bands, SCL (unless given: read for the scene choice) and labels onto the AOI
        grid concurrently."""
        img = self.cfg.imagery
        grid = self._grid(poi, scene)
        futures: dict[str, Future[Any]] = {}
        if img.rgb_source == "visual":
            visual = scene.assets["visual"]
            futures["visual"] = self.read_pool.submit(raster_io.read_on_grid, visual.href, grid, bands=[1, 2, 3], fill=visual.nodata or 0)
        else:
            for name in ("red", "green", "blue"):
                asset = scene.assets[name]
                futures[name] = self.read_pool.submit(raster_io.read_on_grid, asset.href, grid, fill=asset.nodata or 0)
        if "scl" in scene.assets and scl is None:
            futures["scl"] = self.read_pool.submit(raster_io.read_on_grid, scene.assets["scl"].href, grid, fill=0)
        futures["labels"] = self.read_pool.submit(self.labels.read, grid, scene)
        if self.cfg.output.bands == "all":
            futures.update(bands.submit_reads(scene, grid, self.read_pool.submit, reading=list(futures)))
        arrays = {name: future.result() for name, future in futures.items()}
        if scl is not None:
            arrays["scl"] = scl
        return AoiRead(poi, scene, grid, arrays)


@dataclass
class PoiFailed:
    """A POI that stopped before tiling (no scene, unreadable raster)."""

    poi: Poi
    failures: list[Sample | Failure]


def _done(value: list[Sample | Failure]) -> Future[list[Sample | Failure]]:
    future: Future[list[Sample | Failure]] = Future()
    future.set_result(value)
    return future


class Tiler:
    """The CPU stage: stretch, classify, cut, downsample, measure and encode one AOI.

    Picklable (config and plain data only) so it runs in worker processes.
    """

    def __init__(self, cfg: Config, label_meta: dict[str, Any], label_fill: int) -> None:
        self.cfg = cfg
        self.label_meta = label_meta
        self.label_fill = label_fill
        self.scheme = get_scheme(cfg.labels.scheme)
        img = cfg.imagery
        self.tiles = tile_windows(img.aoi_size, img.tile_size, img.tile_stride)
        offsets = [w.row_off for w in self.tiles] + [w.col_off for w in self.tiles]
        self.small_size = shared_output_size(img.aoi_size, img.tile_size, img.output_size, offsets)
        self.palette = self.scheme.colormap()

    def __call__(self, read: AoiRead) -> list[Sample | Failure]:
        aoi = self.prepare(read)
        return [self.make_tile(read.poi, read.scene, aoi, window) for window in self.tiles]

    def prepare(self, read: AoiRead) -> AoiArrays:
        """Stretch RGB over the whole AOI, classify label codes, build masks."""
        img, arrays, scene = self.cfg.imagery, read.arrays, read.scene
        if img.rgb_source == "visual":
            rgb, valid, stretch = rgb_from_visual(arrays["visual"], scene.assets["visual"], img.stretch_percentiles)
        else:
            assets = (scene.assets["red"], scene.assets["green"], scene.assets["blue"])
            rgb, valid, stretch = rgb_from_bands(arrays["red"], arrays["green"], arrays["blue"], assets, img.stretch_percentiles)
        labels, unknown = self.scheme.classify(arrays["labels"], extra_nodata=[self.label_fill])
        cloud = cloud_mask(arrays["scl"], img.cloud_classes) if "scl" in arrays else None
        aoi_cloud = round(float(cloud[valid].mean()), 4) if cloud is not None and valid.any() else None
        small = None
        if self.small_size is not None:
            size = self.small_size
            small = SmallAoi(
                (img.output_size, img.tile_size),
                downsample_rgb(rgb, size),
                downsample_mask(valid, size),
                downsample_labels(labels, size, self.cfg.labels.downsample),
                downsample_mask(cloud, size) if cloud is not None else None,
            )
        return AoiArrays(read.grid, rgb, valid, labels, unknown, cloud, stretch, aoi_cloud, small,
                         bands.aoi_reflectance(arrays, scene))

    def make_tile(self, poi: Poi, scene: Scene, aoi: AoiArrays, window: TileWindow) -> Sample | Failure:
        """Downsample, measure and encode one tile, or say why it is skipped."""
        out = self.cfg.imagery.output_size
        rows = slice(window.row_off, window.row_off + window.size)
        cols = slice(window.col_off, window.col_off + window.size)
        key = sample_key(poi.poi_id, window.index)
        small = aoi.small
        if small is not None:
            small_rows, small_cols = small.window(window, out)
            valid = small.valid[small_rows, small_cols]
            labels = small.labels[small_rows, small_cols]
            cloud = small.cloud[small_rows, small_cols] if small.cloud is not None else None
        else:
            valid = downsample_mask(aoi.valid[rows, cols], out)
            labels = downsample_labels(aoi.labels[rows, cols], out, self.cfg.labels.downsample)
            cloud = downsample_mask(aoi.cloud[rows, cols], out) if aoi.cloud is not None else None
        stats = compute_stats(
            labels,
            self.scheme,
            valid=valid,
            cloud=cloud,
            unknown_code_pixels=int(aoi.unknown[rows, cols].sum()),
            min_component_pixels=self.cfg.stats.min_component_pixels,
            max_components=self.cfg.stats.max_components,
            elongation_threshold=self.cfg.stats.elongation_threshold,
        )
        skip = self._skip_reason(stats)
        if skip is not None:
            return Failure("tile", skip[0], poi.poi_id, key, skip[1])

        rgb = small.rgb[small_rows, small_cols].copy() if small is not None else downsample_rgb(aoi.rgb[rows, cols], out)
        rgb[~valid] = 0
        mask = np.where(valid, labels, NODATA_INDEX).astype(np.uint8)
        level = self.cfg.output.png_compress_level
        tile_grid = sub_grid(aoi.grid, window)
        split_key = split_key_for(poi, self.cfg.splits)
        split = assign_split(split_key, self.cfg.splits.fractions, self.cfg.splits.salt)
        metadata = self._metadata(poi, scene, tile_grid, window, aoi, split)
        bands_tif = None
        if aoi.spectral is not None:
            native_cloud = aoi.cloud[rows, cols] if aoi.cloud is not None else None
            bands.add_indices(stats, aoi.spectral[:, rows, cols], mask, native_cloud)
            bands_tif, metadata["bands"] = (bands.encode_bands(aoi.spectral[:, rows, cols], tile_grid, scene),
                                            bands.bands_metadata(scene, native_cloud))
        return Sample(
            key=key,
            split=split,
            image_png=encode_png(rgb, level),
            mask_png=encode_png(mask, level, self.palette) if self.cfg.output.write_masks else None,
            metadata=metadata,
            stats=stats,
            masks=component_masks(mask, stats, self.scheme) if "masks" in self.cfg.captions.tasks else [],
            bands_tif=bands_tif,
        )

    def _skip_reason(self, stats: TileStats) -> tuple[str, str] | None:
        img = self.cfg.imagery
        if stats["valid_pixels"] == 0:
            return "all_nodata", "no pixel of the tile has both image data and a known label"
        if stats["valid_share"] < img.min_tile_valid:
            return "low_valid", f"valid share {stats['valid_share']:.2f} < imagery.min_tile_valid {img.min_tile_valid}"
        if stats["cloud_share"] > img.max_tile_cloud:
            return "cloudy", f"cloud share {stats['cloud_share']:.2f} > imagery.max_tile_cloud {img.max_tile_cloud}"
        return None

    def _metadata(
        self, poi: Poi, scene: Scene, tile_grid: Grid, window: TileWindow, aoi: AoiArrays, split: str
    ) -> dict[str, Any]:
        out = self.cfg.imagery.output_size
        factor = window.size / out
        a, b, c, d, e, f = tile_grid.transform
        output_grid = Grid(tile_grid.crs, (a * factor, b, c, d, e * factor, f), out, out)
        lat, lon = center_wgs84(tile_grid)
        return {
            "poi_id": poi.poi_id,
            "poi_row": poi.row,
            "tile": window.index,
            "tile_id": sample_key(poi.poi_id, window.index),
            "lat": poi.lat,
            "lon": poi.lon,
            "tile_center": [lat, lon],
            "bbox_wgs84": list(bbox_wgs84(tile_grid)),
            "grid": output_grid.to_json(),
            "native_grid": tile_grid.to_json(),
            "tile_window": {"col_off": window.col_off, "row_off": window.row_off, "size": window.size},
            "scene": {
                "id": scene.id,
                "collection": scene.collection,
                "datetime": scene.datetime,
                "cloud_cover": scene.cloud_cover,
                "aoi_cloud_share": aoi.aoi_cloud_share,
            },
            "rgb": {"source": self.cfg.imagery.rgb_source, "stretch": aoi.stretch, "percentiles": list(self.cfg.imagery.stretch_percentiles)},
            "label": self.label_meta,
            "split": split,
            "rsbuild_version": __version__,
        }
