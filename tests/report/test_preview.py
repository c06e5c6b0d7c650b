"""The HTML preview gallery: what goes into the page, and the page itself in headless Chromium.

``write_test_dataset`` writes a small dataset with real shards (test_plots.py uses its samples):
seeded label masks over three splits, statistics from ``rsbuild.chips.stats``, and captions with every
verdict (passed, failed with reasons, unchecked, never written), one of them hostile HTML.
The browser test drives Debian's chromium over the Chrome DevTools Protocol (``websockets``),
reads console errors and the DOM, clicks, and keeps a screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from rsbuild.chips.stats import compute_stats
from rsbuild.dataset.sft import component_boxes
from rsbuild.dataset.shards import ShardSink
from rsbuild.errors import ConfigError
from rsbuild.records import SPLITS, Sample, sample_key
from rsbuild.report.preview import overlay_png, parse_filters, write_preview
from rsbuild.schemes import ESA_WORLDCOVER, NODATA_INDEX

CHIP = 64
TILES_PER_POI = 2
HOSTILE_TEXT = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"> & <b>bold</b>'
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"


# ---------------------------------------------------------------------------------------------
# A small dataset with known content


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _mask(rng: np.random.Generator) -> np.ndarray:
    """Two classes split at a random column, a blob of a third, sometimes a nodata strip."""
    a, b, c = rng.choice(len(ESA_WORLDCOVER.classes), size=3, replace=False)
    mask = np.full((CHIP, CHIP), a, dtype=np.uint8)
    mask[:, int(rng.integers(16, 48)) :] = b
    y, x = rng.integers(8, CHIP - 20, size=2)
    mask[y : y + 14, x : x + 14] = c
    if rng.random() < 0.3:
        mask[:4, :] = NODATA_INDEX
    return mask


def _chip(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colours = ESA_WORLDCOVER.colormap().astype(np.int16)
    noise = rng.integers(-25, 26, size=(CHIP, CHIP, 3))
    return np.clip(colours[mask] + noise, 0, 255).astype(np.uint8)


def _annotations(key: str, stats: dict[str, Any], n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Captions with varied lengths and verdicts; the n-th tile decides which kinds it gets."""
    dominant = stats["dominant_class"]
    words = " ".join(["with", "scattered", "patches"] * (n % 5))
    annotations = [
        {"task": "area", "text": f"A Sentinel-2 chip dominated by {dominant} {words}".strip(), "annotator": "template",
         "verified": True, "check_reasons": []},
        {"task": "class", "class": dominant, "text": f"{dominant} covers most of the tile.", "annotator": "smollm2",
         "verified": n % 4 != 1, "check_reasons": [] if n % 4 != 1 else [f"{dominant}: share stated as 5 %, actual is larger"]},
    ]
    if n % 3 == 0:
        annotations.append({"task": "linear", "text": "A road runs east-west.", "annotator": "smollm2"})  # unchecked
    if n == 2:
        annotations.append({"task": "revise", "source_task": "area", "text": HOSTILE_TEXT, "annotator": "smollm2", "verified": True})
    failures = [{"task": "revise", "reason": "engine_error", "detail": "HTTP 503 after 3 retries", "key": key}] if n % 7 == 5 else []
    return annotations, failures


def _split_of(poi_index: int) -> str:
    return ("train", "train", "validation", "test", "train")[poi_index % 5]


def make_test_samples(n_pois: int = 15, seed: int = 7) -> list[Sample]:
    """``n_pois`` × TILES_PER_POI seeded samples in POI order (``write_test_dataset`` writes them)."""
    rng = np.random.default_rng(seed)
    samples: list[Sample] = []
    n = 0
    for poi_index in range(n_pois):
        poi_id = f"poi{poi_index:03d}"
        lat, lon = float(rng.uniform(-60, 70)), float(rng.uniform(-170, 170))
        split = _split_of(poi_index)
        for tile in range(TILES_PER_POI):
            key = sample_key(poi_id, tile)
            mask = _mask(rng)
            valid = mask != NODATA_INDEX
            stats = compute_stats(mask, ESA_WORLDCOVER, valid=valid, min_component_pixels=10)
            annotations, failures = _annotations(key, stats, n)
            metadata = {
                "poi_id": poi_id, "tile": tile, "lat": lat, "lon": lon, "tile_center": [lat + 0.001 * tile, lon],
                "scene": {"id": f"S2B_T{poi_index:02d}_20240710", "datetime": "2024-07-10T10:20:31Z", "cloud_cover": 3.5},
                "split": split,
            }
            samples.append(Sample(key, split, _png(_chip(mask, rng)), _png(mask), metadata, stats, annotations, failures))
            n += 1
    return samples


def write_test_dataset(out_dir: Path, n_pois: int = 15, seed: int = 7, shard_max_samples: int = 7) -> list[Sample]:
    """Write ``make_test_samples`` as shards under ``out_dir/shards``; returns them in the order
    ``read_shard`` over sorted shards gives them back (split name, then write order)."""
    samples = make_test_samples(n_pois, seed)
    shards_dir = out_dir / "shards"
    for split in SPLITS:
        sink = ShardSink(shards_dir, split, max_samples=shard_max_samples, max_bytes=10**9)
        for sample in samples:
            if sample.split == split:
                sink.write(sample)
        sink.close()
    return sorted(samples, key=lambda s: s.split)  # stable: write order within a split


def has_failed_caption(sample: Sample) -> bool:
    """Independent of rsbuild.report.preview: a verified=False annotation or a failure with a text."""
    return any(a.get("verified") is False for a in sample.annotations) or any(f.get("text") for f in sample.failures)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Sample]]:
    out = tmp_path_factory.mktemp("dataset")
    return out, write_test_dataset(out)


def page_records(page: Path) -> list[dict[str, Any]]:
    text = page.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="rsb-records">(.*?)</script>', text, re.S)
    assert match, "the page has no records script"
    return json.loads(match.group(1))


# ---------------------------------------------------------------------------------------------
# What goes into the page


def test_overlay_has_scheme_colours_and_transparent_nodata() -> None:
    mask = np.array([[0, 7], [NODATA_INDEX, 4]], dtype=np.uint8)  # tree cover, water, nodata, built-up
    with Image.open(io.BytesIO(overlay_png(_png(mask), ESA_WORLDCOVER))) as img:
        assert img.mode == "RGBA"
        rgba = np.asarray(img)
    assert tuple(rgba[0, 0]) == (*ESA_WORLDCOVER.classes[0].color, 255)
    assert tuple(rgba[0, 1]) == (*ESA_WORLDCOVER.classes[7].color, 255)
    assert tuple(rgba[1, 1]) == (*ESA_WORLDCOVER.classes[4].color, 255)
    assert rgba[1, 0, 3] == 0


def test_page_holds_every_sample_with_its_images_boxes_and_verdicts(dataset: tuple[Path, list[Sample]], tmp_path: Path) -> None:
    out, samples = dataset
    page = tmp_path / "view" / "preview.html"
    summary = write_preview(out, page)
    records = page_records(page)
    assert [r["key"] for r in records] == [s.key for s in samples]
    assert summary.samples == summary.scanned == len(samples)
    assert dict(summary.samples_by_split) == {s: sum(x.split == s for x in samples) for s in SPLITS}
    html_text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html_text), "the page must not load anything remote"
    assert "<link" not in html_text and "<script src" not in html_text
    assert "window.__pwned = 1</script>" not in html_text, "caption text must not be able to close the script element"

    for sample, record in zip(samples, records, strict=True):
        assert (page.parent / record["image"]).read_bytes() == sample.image_png
        with Image.open(page.parent / record["overlay"]) as overlay, Image.open(io.BytesIO(sample.mask_png)) as mask_img:
            rgba, mask = np.asarray(overlay), np.asarray(mask_img)
        assert np.array_equal(rgba[..., 3] == 0, mask == NODATA_INDEX)
        for index in np.unique(mask[mask != NODATA_INDEX]):
            assert (rgba[mask == index][:, :3] == ESA_WORLDCOVER.classes[index].color).all()
        assert [(b["label"], b["bbox"]) for b in record["boxes"]] == [(b.label, list(b.bbox)) for b in component_boxes(sample.stats)]
        assert [c["name"] for c in record["classes"]] == [c["name"] for c in sample.stats["classes"]]
        assert record["meta"]["scene"] == sample.metadata["scene"]["id"] and record["meta"]["date"] == "2024-07-10"
        assert record["meta"]["lat"] == sample.metadata["tile_center"][0]
        expected = [(a["task"], a["text"], {True: "pass", False: "fail"}.get(a.get("verified"), "unchecked")) for a in sample.annotations]
        expected += [(f["task"], "", "error") for f in sample.failures]
        assert [(c["task"], c["text"], c["verdict"]) for c in record["captions"]] == expected
        for caption, annotation in zip(record["captions"][: len(sample.annotations)], sample.annotations, strict=True):
            assert caption["reasons"] == annotation.get("check_reasons", [])
        for caption in record["captions"][len(sample.annotations) :]:
            assert caption["reasons"] == ["engine_error: HTTP 503 after 3 retries"]


def test_header_gives_counts_and_the_pass_rate(dataset: tuple[Path, list[Sample]], tmp_path: Path) -> None:
    out, samples = dataset
    page = tmp_path / "preview.html"
    write_preview(out, page)
    match = re.search(r'<script type="application/json" id="rsb-info">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    assert match
    header = json.loads(match.group(1))["header"]
    passed = sum(a.get("verified") is True for s in samples for a in s.annotations)
    failed = sum(a.get("verified") is False for s in samples for a in s.annotations)
    captions = sum(len(s.annotations) + len(s.failures) for s in samples)
    assert f"this page: {len(samples)} samples, {captions} captions, check pass rate {passed / (passed + failed):.1%}" in header
    assert 'id="rsb-raw"' in page.read_text(encoding="utf-8")  # the raw-chip switch


def test_write_time_filters_split_and_limit(dataset: tuple[Path, list[Sample]], tmp_path: Path) -> None:
    out, samples = dataset
    page = tmp_path / "fails.html"
    write_preview(out, page, split="train", filters=["verdict=fail", "class=water,cropland,tree cover"])
    wanted = [
        s.key for s in samples
        if s.split == "train" and has_failed_caption(s)
        and {c["name"] for c in s.stats["classes"]} & {"water", "cropland", "tree cover"}
    ]
    assert wanted, "the fixture should contain such samples"
    assert [r["key"] for r in page_records(page)] == wanted

    summary = write_preview(out, tmp_path / "first.html", limit=3)
    assert [r["key"] for r in page_records(tmp_path / "first.html")] == [s.key for s in samples[:3]]
    assert summary.scanned == 3, "reading must stop once the limit is reached"

    task_and_verdict = parse_filters(["task=linear", "verdict=unchecked"])
    write_preview(out, tmp_path / "linear.html", filters=task_and_verdict)
    assert [r["key"] for r in page_records(tmp_path / "linear.html")] == [
        s.key for s in samples if any(a["task"] == "linear" and "verified" not in a for a in s.annotations)
    ]


def test_inline_images_make_a_single_file(dataset: tuple[Path, list[Sample]], tmp_path: Path) -> None:
    out, samples = dataset
    page = tmp_path / "single.html"
    summary = write_preview(out, page, limit=2, inline_images=True)
    assert summary.assets_dir is None and list(tmp_path.iterdir()) == [page]
    for sample, record in zip(samples[:2], page_records(page), strict=True):
        prefix = "data:image/png;base64,"
        assert record["image"].startswith(prefix)
        assert base64.b64decode(record["image"][len(prefix) :]) == sample.image_png


@pytest.mark.parametrize(
    ("specs", "named"),
    [(["colour=red"], "colour=red"), (["verdict=maybe"], "maybe"), (["class=forest"], "forest"), (["split"], "split")],
)
def test_bad_filters_name_what_to_change(specs: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_filters(specs)


def test_split_contradicting_a_split_filter_is_refused(dataset: tuple[Path, list[Sample]], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contradicts"):
        write_preview(dataset[0], tmp_path / "x.html", split="test", filters=["split=train"])


# ---------------------------------------------------------------------------------------------
# The page in headless Chromium


class DevTools:
    """A minimal Chrome DevTools Protocol client: calls by id, events kept in order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws  # an open websockets.sync.client connection
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    def _receive(self, deadline: float) -> dict[str, Any]:
        message = json.loads(self.ws.recv(timeout=max(0.05, deadline - time.monotonic())))
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_for(self, method: str, since: int = 0, timeout: float = 30.0) -> dict[str, Any]:
        """The first ``method`` event at or after index ``since`` of ``events``, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            self._receive(deadline)

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        since = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", since)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element."""
        x, y = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                             " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads reported so far."""
        found = []
        for event in self.events:
            params = event["params"]
            if event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(json.dumps(params["args"])[:500])
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture()
def browser(tmp_path: Path):
    websockets_client = pytest.importorskip("websockets.sync.client", reason="the browser test drives chromium with the websockets package")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed; run scripts/install_chromium.sh")
    profile = tmp_path / "chromium-profile"
    log = open(tmp_path / "chromium.log", "wb")  # noqa: SIM115  (held open for the browser's whole life)
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1400,2200", "about:blank"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None, f"chromium exited: {(tmp_path / 'chromium.log').read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = next(t for t in targets if t["type"] == "page")
        with websockets_client.connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=15) as ws:
            devtools = DevTools(ws)
            for domain in ("Runtime", "Log", "Page"):
                devtools.call(f"{domain}.enable")
            devtools.call("Emulation.setDeviceMetricsOverride", width=1400, height=2200, deviceScaleFactor=1, mobile=False)
            yield devtools
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _card_keys(devtools: DevTools) -> list[str]:
    return devtools.evaluate("[...document.querySelectorAll('#rsb-grid .card')].map(c => c.dataset.key)")


def _in_card(key: str, selector: str) -> str:
    """JS expression: the elements matching ``selector`` inside the card of ``key``."""
    css = f'.card[data-key="{key}"] {selector}'
    return f"document.querySelectorAll({json.dumps(css)})"


def _select(devtools: DevTools, select_id: str, value: str) -> None:
    devtools.evaluate(f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); s.value = {json.dumps(value)};"
                      " s.dispatchEvent(new Event('change', {bubbles: true})); })()")


WAIT_FOR_IMAGES = """new Promise((resolve) => {
  const pending = [...document.images].filter((img) => !img.complete);
  const timer = setTimeout(() => resolve('timeout'), 15000);
  Promise.all(pending.map((img) => new Promise((r) => { img.onload = r; img.onerror = r; })))
    .then(() => { clearTimeout(timer); resolve('ok'); });
})"""


def test_page_in_headless_chromium(dataset: tuple[Path, list[Sample]], tmp_path: Path, browser: DevTools) -> None:
    out, samples = dataset
    page_size = 12
    page = tmp_path / "site" / "preview.html"
    write_preview(out, page, page_size=page_size)
    browser.navigate(page.as_uri())
    assert browser.evaluate(WAIT_FOR_IMAGES) == "ok"
    keys = [s.key for s in samples]

    # Loads cleanly, counts every sample, shows the first page with every image decoded.
    assert browser.evaluate("document.getElementById('rsb-count').textContent") == str(len(samples))
    assert _card_keys(browser) == keys[:page_size]
    sizes = browser.evaluate("[...document.querySelectorAll('.card img')].map(i => [i.className, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == 2 * page_size and all(w == CHIP and h == CHIP for _, w, h in sizes)
    assert browser.evaluate("window.__pwned === undefined"), "caption text ran as script"
    hostile = next(s for s in samples if any(a["text"] == HOSTILE_TEXT for a in s.annotations))
    assert hostile.key in keys[:page_size]
    texts = browser.evaluate(f"[...{_in_card(hostile.key, '.cap p')}].map(p => p.textContent)")
    assert HOSTILE_TEXT in texts, "caption text must be shown as written"

    # A failed caption is marked and shows its reasons.
    failing = next(s for s in samples[:page_size] if has_failed_caption(s))
    reasons = browser.evaluate(f"[...{_in_card(failing.key, '.cap.verdict-fail .reasons li')}].map(li => li.textContent)")
    assert reasons == [r for a in failing.annotations if a.get("verified") is False for r in a["check_reasons"]]
    backgrounds = browser.evaluate(f"[...{_in_card(failing.key, '.cap')}].map(li => getComputedStyle(li).backgroundColor)")
    verdicts = browser.evaluate(f"[...{_in_card(failing.key, '.cap')}].map(li => li.dataset.verdict)")
    fail_background = {bg for bg, v in zip(backgrounds, verdicts, strict=True) if v == "fail"}
    assert fail_background and fail_background.isdisjoint(bg for bg, v in zip(backgrounds, verdicts, strict=True) if v == "pass")

    # Boxes are drawn per component, in place.
    boxes = browser.evaluate(f"{_in_card(keys[0], '.box')}.length")
    assert boxes == len(samples[0].stats["components"]) > 0

    ARTIFACTS.mkdir(exist_ok=True)
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    (ARTIFACTS / "preview.png").write_bytes(shot)
    with Image.open(io.BytesIO(shot)) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[0] >= 1000 and pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500, "the screenshot looks blank"

    # The header shows the pass rate; "raw chip" hides masks and boxes.
    assert "check pass rate" in browser.evaluate("document.getElementById('rsb-stats').textContent")
    browser.click("#rsb-raw")
    hidden = browser.evaluate("[...document.querySelectorAll('.card img.mask, .card .box')].map(e => getComputedStyle(e).display)")
    assert hidden and set(hidden) == {"none"}
    browser.click("#rsb-raw")

    # A real click on "next" shows the second page.
    browser.click("#rsb-next")
    assert _card_keys(browser) == keys[page_size : 2 * page_size]
    assert browser.evaluate("document.getElementById('rsb-page').textContent") == f"page 2 of {-(-len(keys) // page_size)}"

    # Filters change what is shown.
    _select(browser, "rsb-split", "validation")
    validation = [s.key for s in samples if s.split == "validation"]
    assert browser.evaluate("document.getElementById('rsb-count').textContent") == str(len(validation))
    assert _card_keys(browser) == validation[:page_size]
    _select(browser, "rsb-split", "")
    _select(browser, "rsb-verdict", "fail")
    failing_keys = [s.key for s in samples if has_failed_caption(s)]
    assert 0 < len(failing_keys) < len(keys)
    assert browser.evaluate("document.getElementById('rsb-count').textContent") == str(len(failing_keys))
    assert _card_keys(browser) == failing_keys[:page_size]
    _select(browser, "rsb-verdict", "")
    _select(browser, "rsb-class", "water")
    water = [s.key for s in samples if any(c["name"] == "water" for c in s.stats["classes"])]
    assert _card_keys(browser) == water[:page_size]
    _select(browser, "rsb-class", "")
    _select(browser, "rsb-task", "linear")
    linear = [s.key for s in samples if any(a["task"] == "linear" for a in s.annotations)]
    assert _card_keys(browser) == linear[:page_size]

    # A page written with filters says so.
    write_preview(out, page.with_name("failing.html"), filters=["verdict=fail"])
    browser.navigate(page.with_name("failing.html").as_uri())
    assert browser.evaluate("document.getElementById('rsb-count').textContent") == str(len(failing_keys))
    note = browser.evaluate("document.getElementById('rsb-note').hidden ? '' : document.getElementById('rsb-note').textContent")
    assert f"{len(failing_keys)} of the {len(samples)} samples" in note and "verdict=fail" in note

    assert browser.errors() == []
