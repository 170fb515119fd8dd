"""Whether the Hugging Face hub can answer, decided at once.

Without HF_HUB_OFFLINE set, a machine with no network makes ``datasets`` and ``huggingface_hub`` retry for about
half a minute before failing, so a typo (``--dataset nofolder``) cost 26 s and then blamed the hub. One probe per
process (name lookup and a TCP connect with a short timeout) tells whether the hub can be reached at all; a name
that is neither a local folder nor in the local cache then fails in one line, at once.
"""
from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


def offline_by_environment() -> bool:
    """Whether HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set (to anything but 0/false)."""
    return any(os.environ.get(v, "0") not in ("0", "", "false", "False")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


@functools.lru_cache(maxsize=None)
def _reachable(endpoint: str, timeout: float) -> bool:
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def hub_available(timeout: float = 3.0) -> bool:
    """True when the hub may be asked: not set offline, and its endpoint answers a TCP connect (probed once)."""
    if offline_by_environment():
        return False
    return _reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


def in_local_cache(repo_id: str, repo_type: str = "model") -> bool:
    """Whether any file of ``repo_id`` lies in the local Hugging Face caches: the hub cache, as
    ``huggingface_hub.scan_cache_dir`` reads it, and for datasets also the ``datasets`` cache (folders
    ``owner___name``)."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:  # the folder named at call time: scan_cache_dir's own default is fixed when huggingface_hub is imported
        repos = scan_cache_dir(constants.HF_HUB_CACHE).repos
    except CacheNotFound:
        repos = frozenset()
    if any(r.repo_id == repo_id and r.repo_type == repo_type and r.nb_files for r in repos):
        return True
    if repo_type == "dataset":
        from datasets import config

        folder = Path(config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")
        return folder.is_dir() and any(folder.iterdir())
    return False


def unreachable_reason(repo_id: str, repo_type: str = "model") -> str | None:
    """Why ``repo_id`` cannot be loaded from the hub right now (offline or unreachable, and not cached), in a
    few words; None when loading may go ahead."""
    if in_local_cache(repo_id, repo_type):
        return None
    if offline_by_environment():
        return "it is not in the local Hugging Face cache and HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set"
    if not hub_available():
        return "it is not in the local Hugging Face cache and the hub cannot be reached (no network)"
    return None
