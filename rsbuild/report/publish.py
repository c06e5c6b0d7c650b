"""`rsbuild publish OUT REPO`: upload a finished dataset to a Hugging Face dataset repository.

huggingface_hub is imported only here. The token comes from ``HF_TOKEN`` or the token file
``huggingface-cli login`` wrote; it is passed to the client and never written or printed.
``HF_ENDPOINT`` points the client at another Hub (a mirror, or a loopback server in tests).
Files the Hub already holds unchanged are skipped, so running the command again after an
interruption sends only what is missing or changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rsbuild.dataset.layout import CARD_FILE, SUMMARY_FILE, TMP_SUFFIX, UNITS_DIR
from rsbuild.errors import InputError, MissingExtraError

# run bookkeeping and local views that do not belong in a published dataset
IGNORED = [f"{UNITS_DIR}/**", "data/parts/**", f"*{TMP_SUFFIX}", "preview.html", "preview_files/**", ".cache/**"]


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
    """Create (if needed) the dataset repository ``repo_id`` and upload ``out_dir`` to it in one commit."""
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
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=_token())
    try:
        repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=out_dir, ignore_patterns=IGNORED,
            commit_message=message or f"rsbuild publish {out_dir.name}",
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise InputError(f"the Hub refused the upload to {repo_id} (HTTP {status}); check the token's write access and REPO") from None
    return PublishResult(repo_url=str(repo), commit_url=getattr(commit, "commit_url", None))
