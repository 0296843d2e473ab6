"""Released weights by name, through ``huggingface_hub``.

``load_model("allenai/OlmoEarth-v1_2-Base")`` (or the short form ``"OlmoEarth-v1_2-Base"``, and
``revision=`` a branch, tag or commit) downloads ``config.json`` and ``weights.pth`` of the release
into the Hugging Face cache and loads them with the strict release loader. Everything the hub
client honours applies: ``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache is), ``HF_ENDPOINT`` (which
server), ``HF_HUB_OFFLINE=1`` (cache only), ``HF_TOKEN`` or ``huggingface-cli login`` (tokens).
These are read at call time, so a process can change them between calls.

The loaded model's :attr:`~geolatent.model.latent_mim.LatentMIM.provenance` records the release
id, the requested and the resolved revision (a commit hash) and the sha256 of the weights file,
so writers (embedding COGs, fine-tuned bundles, archives) can make results reproducible.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from geolatent.model.versions import SIZE_TABLE

ORGANIZATION = "allenai"
RELEASE_FILES = ("config.json", "weights.pth")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHORT = re.compile(r"^OlmoEarth-v[0-9_]+-[A-Za-z]+$")


class ModelNotAvailable(OSError):
    """Release weights that cannot be had here; the message says how to get them (an OSError,
    like a missing checkpoint folder)."""


@dataclass(frozen=True)
class Release:
    """One released model: Hugging Face id, version, size and embedding widths."""

    repo_id: str
    version: str
    size: str
    location_embedding_dim: int | None = None  # v1.3's distilled embedding

    @property
    def embedding_dim(self) -> int:
        """Token / feature-map / pooled width D."""
        return SIZE_TABLE[self.size.lower()].embedding_size


def _releases() -> tuple[Release, ...]:
    out = [Release(f"{ORGANIZATION}/OlmoEarth-v1-{s}", "v1", s)
           for s in ("Nano", "Tiny", "Base", "Large")]  # fmt: skip
    out += [Release(f"{ORGANIZATION}/OlmoEarth-v1_1-{s}", "v1.1", s)
            for s in ("Nano", "Tiny", "Base")]  # fmt: skip
    out += [Release(f"{ORGANIZATION}/OlmoEarth-v1_2-{s}", "v1.2", s)
            for s in ("Nano", "Tiny", "Small", "Base")]  # fmt: skip
    out.append(Release(f"{ORGANIZATION}/OlmoEarth-v1_3-Base", "v1.3", "Base", 128))
    return tuple(out)


KNOWN_RELEASES: tuple[Release, ...] = _releases()
"""Every OlmoEarth release geolatent knows (``geolatent models`` lists them)."""


def resolve_id(name: str) -> str:
    """``"OlmoEarth-v1_2-Base"`` -> ``"allenai/OlmoEarth-v1_2-Base"``; full ids pass through."""
    name = name.strip()
    if _SHORT.match(name):
        return f"{ORGANIZATION}/{name}"
    if _ID.match(name):
        return name
    raise ValueError(
        f"{name!r} is neither a model folder nor a model id (owner/name, e.g. "
        f"{KNOWN_RELEASES[-1].repo_id!r})"
    )


def looks_like_id(name: str) -> bool:
    """Whether ``name`` (which is not an existing path) should be looked up on the hub."""
    return bool(_SHORT.match(name.strip()) or _ID.match(name.strip()))


def _hub_settings() -> dict:
    """Endpoint, cache and offline mode from the environment, read now (not at import)."""
    from huggingface_hub import constants

    home = os.environ.get("HF_HOME")
    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(home) / "hub") if home else constants.HF_HUB_CACHE
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")
    endpoint = os.environ.get("HF_ENDPOINT") or None
    return {"cache_dir": cache, "offline": offline or constants.HF_HUB_OFFLINE,
            "endpoint": endpoint}  # fmt: skip


def _how_to_get(repo_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"download it where there is network access (`huggingface-cli download {repo_id}{rev} "
        "config.json weights.pth`, or run this once online), then copy the Hugging Face cache "
        "(HF_HOME) here or pass the downloaded folder as the model path"
    )


def download_release(
    name: str,
    revision: str | None = None,
    token: str | bool | None = None,
    local_only: bool = False,
) -> tuple[Path, dict]:
    """Fetch (or find in the cache) a release folder.

    Args:
        name: full id (``allenai/OlmoEarth-v1_2-Base``) or short form (``OlmoEarth-v1_2-Base``).
        revision: branch, tag or commit (default: the repository's default branch).
        token: hub token (default: ``HF_TOKEN`` or the stored login).
        local_only: only look in the cache (as ``HF_HUB_OFFLINE=1``).

    Returns:
        ``(folder, provenance)``: the snapshot folder with ``config.json`` and ``weights.pth``,
        and ``{"repo_id", "requested_revision", "revision"}`` (``revision`` = resolved commit).

    Raises:
        ModelNotAvailable: unknown id, unreachable server without a cached copy, offline mode
            without a cached copy, or an incomplete download; the message says what to do.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = resolve_id(name)
    hub = _hub_settings()
    hub["offline"] = hub["offline"] or local_only
    paths = {}
    for filename in RELEASE_FILES:
        try:
            paths[filename] = Path(hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=hub["cache_dir"],
                endpoint=hub["endpoint"], local_files_only=hub["offline"], token=token,
            ))  # fmt: skip
        except LocalEntryNotFoundError:
            why = "HF_HUB_OFFLINE is set" if hub["offline"] else "the hub cannot be reached"
            raise ModelNotAvailable(
                f"the weights of {repo_id} are not in the Hugging Face cache ({hub['cache_dir']}) "
                f"and {why}; {_how_to_get(repo_id, revision)}. geolatent never substitutes "
                "random weights."
            ) from None
        except RepositoryNotFoundError:
            known = ", ".join(r.repo_id for r in KNOWN_RELEASES)
            raise ModelNotAvailable(
                f"model id {repo_id!r} was not found on "
                f"{hub['endpoint'] or 'the Hugging Face Hub'} "
                f"(or needs a token: set HF_TOKEN); known releases: {known}"
            ) from None
        except RevisionNotFoundError:
            raise ModelNotAvailable(
                f"revision {revision!r} of {repo_id} does not exist; give a branch, tag or commit "
                "of the repository"
            ) from None
        except EntryNotFoundError:
            raise ModelNotAvailable(
                f"{repo_id} (revision {revision or 'default'}) has no {filename}: not an "
                "OlmoEarth release folder"
            ) from None
        except OSError as e:  # e.g. a truncated download (size consistency check)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelNotAvailable(
                f"downloading {filename} of {repo_id} failed ({first}); nothing was loaded. "
                "Retry; if it keeps failing, check the connection or HF_ENDPOINT."
            ) from None
    folders = {p.parent for p in paths.values()}
    if len(folders) != 1:
        raise ModelNotAvailable(
            f"{repo_id}: config.json and weights.pth resolved to different revisions "
            f"({sorted(str(f) for f in folders)}); the repository changed during the download, "
            "retry"
        )
    folder = folders.pop()
    return folder, {"repo_id": repo_id, "requested_revision": revision, "revision": folder.name}


def endpoint_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub endpoint (``HF_ENDPOINT`` or huggingface.co) accepts a TCP connection."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(_hub_settings()["endpoint"] or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def load_release(
    name: str,
    revision: str | None = None,
    token: str | bool | None = None,
    local_only: bool = False,
):
    """:func:`download_release` then the strict release loader; provenance recorded."""
    from geolatent.model.checkpoint import load_release_folder

    folder, prov = download_release(name, revision, token, local_only)
    model = load_release_folder(folder)
    model.provenance.update(prov)
    model.provenance["source"] = prov["repo_id"]
    return model


def cached_revisions(repo_id: str) -> list[str]:
    """Commits of ``repo_id`` with both release files in the local cache (newest first)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(_hub_settings()["cache_dir"])
    except CacheNotFound:
        return []
    out = []
    for repo in info.repos:
        if repo.repo_id != repo_id or repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            names = {f.file_name for f in rev.files}
            if set(RELEASE_FILES) <= names:
                out.append(rev.commit_hash)
    return out
