"""`rsbuild publish` through Xet, as real users get it (hf_xet installed), and a download back through Xet.

The loopback Hub hands out Xet tokens whose CAS is hf_xet's own on-disk store (``local://``): hf_xet
chunks, dedups and writes xorbs and shards there, the Hub finds each committed file in the shards
and rebuilds it with hf_xet. hf_xet's HTTP CAS protocol is not exercised (no CAS server can be
installed here); everything between huggingface_hub and the Hub is."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from rsbuild.report.publish import publish
from rsbuild.testing.hf_hub import HubServer
from tests.report.test_publish import TOKEN, _dataset, _local_files
from tests.report.test_publish_download import ROOT, _user_env

pytest.importorskip("hf_xet")


@pytest.fixture(autouse=True)
def _online_with_xet(monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)


def _xorbs(cas: Path) -> list[str]:
    """The xorbs (chunk containers) hf_xet wrote to the CAS."""
    return sorted(p.name for p in cas.rglob("default.*") if p.parent.name == "xorbs" and not p.name.endswith(".tagset"))


def test_publish_through_xet_and_download_back_through_xet(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "ds"
    _dataset(out)
    expected = _local_files(out)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "publisher-home"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    cas = tmp_path / "cas"
    with HubServer(xet_cas=cas) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        publish(out, "me/s2-demo")
        assert hub.unknown == [] and hub.repos["me/s2-demo"] == expected  # every file rebuilt from the CAS, sha256 checked
        assert hub.uploads == [] and not any("lfs/objects/batch" in r.target for r in hub.requests)  # no git LFS at all
        binary = {p for p in expected if p.endswith((".tar", ".png"))}
        assert {p for p, data in expected.items() if hashlib.sha256(data).hexdigest() in hub.xet_hashes} == binary
        xorbs = _xorbs(cas)
        assert xorbs

        (out / "README.md").write_text((out / "README.md").read_text() + "\nA note.\n")
        publish(out, "me/s2-demo")  # again: only the changed text file, no new xorb
        assert hub.commits[-1]["paths"] == ["README.md"]
        assert _xorbs(cas) == xorbs

        first_read = len(hub.requests)
        env = _user_env(hub, tmp_path / "user-home")
        del env["HF_HUB_DISABLE_XET"]  # the user's client downloads through Xet
        script = "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1], repo_type='dataset'))"
        result = subprocess.run([sys.executable, "-c", script, "me/s2-demo"], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        snapshot = Path(result.stdout.strip().splitlines()[-1])
        downloaded = {str(p.relative_to(snapshot)): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
        assert downloaded == hub.repos["me/s2-demo"]
        reads = hub.requests[first_read:]
        assert any("/xet-read-token/" in r.target for r in reads)
        assert not any(r.host == "storage" for r in reads)  # binary files came through Xet, not the LFS redirect
        assert hub.unknown == [] and hub.proxied == []
