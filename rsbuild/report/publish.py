"""`rsbuild publish OUT REPO`: upload a finished dataset to a Hugging Face dataset repository.

huggingface_hub is imported only here. The token comes from ``HF_TOKEN`` or the token file
``huggingface-cli login`` wrote; it is passed to the client and never written or printed.
``HF_ENDPOINT`` points the client at another Hub (a mirror, or a loopback server in tests).

The upload is ``upload_folder``, which in huggingface_hub 1.x+ with ``hf_xet`` installed is the
large-folder upload (``upload_large_folder`` is gone from 2.x): files in batches of commits,
binary files (shards, PNGs) through Xet, resumable by running it again. Without ``hf_xet`` it is
one commit with binary files through git LFS. Either way the Hub reports what it holds: unchanged
files are skipped, and LFS/Xet objects uploaded before an interruption are not sent again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rsbuild.dataset.layout import CARD_FILE, SUMMARY_FILE, TMP_SUFFIX, UNITS_DIR
from rsbuild.errors import InputError, MissingExtraError, RsbuildError

# run bookkeeping and local views that do not belong in a published dataset
IGNORED = [f"{UNITS_DIR}/**", "data/parts/**", f"*{TMP_SUFFIX}", "preview.html", "preview_files/**", ".cache/**"]


class PublishInterrupted(RsbuildError):
    """The upload stopped part way (network, Hub or storage error); running it again resumes."""

    exit_code = 1


@dataclass(frozen=True)
class PublishResult:
    """Where the dataset went."""

    repo_url: str
    commit_url: str | None  # None when nothing changed


def _token() -> str:
    try:
        from huggingface_hub import get_token
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with datasets
        raise MissingExtraError("huggingface_hub", "hub", "rsbuild publish") from exc
    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise InputError("no Hugging Face token: set HF_TOKEN or run `huggingface-cli login` (the token is never written anywhere)")
    return token


def publish(out_dir: Path, repo_id: str, *, private: bool = False, message: str | None = None) -> PublishResult:
    """Create (if needed) the dataset repository ``repo_id`` and upload ``out_dir`` to it (see the module doc)."""
    out_dir = Path(out_dir)
    if not (out_dir / SUMMARY_FILE).is_file() or not (out_dir / CARD_FILE).is_file():
        raise InputError(f"{out_dir} is not a finished dataset (no {SUMMARY_FILE} / {CARD_FILE}); run `rsbuild build` to the end first")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise InputError(f"REPO {repo_id!r} must be NAMESPACE/NAME, e.g. my-org/sentinel2-captions")
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:  # read by huggingface_hub when it is imported
        raise InputError("HF_HUB_OFFLINE is set, so huggingface_hub sends no request; unset it (or set HF_HUB_OFFLINE=0) "
                         "for `rsbuild publish`")
    token = _token()
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise InputError(f"the Hub refused to create or open {repo_id} (HTTP {status}); check the token's write access and REPO") from None
    try:
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=out_dir, ignore_patterns=IGNORED,
            commit_message=message or f"rsbuild publish {out_dir.name}",
        )
    except Exception as exc:  # any transport, Hub or storage fault: what was uploaded stays there
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        cause = exc.__cause__
        if cause is not None and str(cause):
            detail += f" ({str(cause).splitlines()[0]})"
        raise PublishInterrupted(
            f"the upload to {repo_id} stopped: {detail.replace(token, '***')}. Run the same command again: "
            "files and objects the Hub already holds are not sent again"
        ) from None
    return PublishResult(repo_url=str(repo), commit_url=getattr(commit, "commit_url", None))
