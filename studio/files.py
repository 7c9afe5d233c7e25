"""Files to the browser: short-lived signed URLs bound to a project and its key.

Nothing under the data directory is served directly (Gradio gets no ``allowed_paths`` there, and
the data directory is a ``blocked_path``). A stored file reaches a browser only through

    GET|HEAD  <base>/loci/files/<token>/<filename>

where ``token`` was signed by this server for one project, one key and one file. Get a URL with
:meth:`FileLinks.url` (the service exposes it as ``Studio.file_url``)::

    url = studio.file_url(project_id, key, sha256, "splats.ply")            # inline, 30 min
    url = studio.file_url(project_id, key, sha256, "world.glb", download=True)
    # -> "/loci/files/eyJ2Ij.../world.glb" (root-relative; ``base`` is the public sub-path)

``url`` checks the key (the view key or the edit key), checks that the file belongs to the
project (an artifact linked to one of its steps, or a frame's colour, depth or mask file), and
signs ``(project, file, filename, download, expiry, key binding)`` with HMAC-SHA256 under a server
secret (``$LOCI_FILE_SECRET``, else ``<data dir>/file-secret``, 256 random bits made once).
The key itself never appears in the URL.

On **every request** the route checks the signature (constant time), the expiry, the filename
(so a URL cannot be renamed to change its content type), that the project still exists and that
the key the URL was made for still opens it. It answers with the file's bytes and:

- a content type from the signed filename, from a fixed list (images, video, splats, meshes,
  JSON, zip); anything else goes out as ``application/octet-stream`` attachment;
- ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox`` (a stored file is
  never run as a page, whatever its bytes are);
- ``Content-Disposition: attachment`` with the filename when ``download=True``, else inline;
- HTTP ``Range`` (single and multiple ranges, ``If-Range``), ``HEAD``, and an ``ETag`` that is
  the file's sha256 (content-addressed files never change);
- ``Cache-Control: private`` up to the link's expiry.

Refusals are one log line each (no traceback). Bad signatures and stale key bindings count
against the client in :class:`Throttle`; past the limit the client gets 429 with ``Retry-After``.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select

from storage.blobs import ArtifactStore
from storage.db import CellArtifact, HistoryCell, NotFound, Project, Repository, WorldFrame

__all__ = [
    "FILES_PREFIX",
    "FileLinks",
    "Grant",
    "LinkError",
    "SecurityHeaders",
    "Throttle",
    "content_type",
    "handoff",
    "load_secret",
    "prune_folder",
    "safe_filename",
]

log = logging.getLogger("loci.files")

FILES_PREFIX = "/loci/files"
#: Types a browser may show inline (by extension of the signed filename). Nothing here is a page
#: or a script: HTML, SVG and JavaScript are never in this list.
INLINE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".ts": "video/mp2t",
    ".glb": "model/gltf-binary",
    ".obj": "model/obj",
    ".ply": "application/octet-stream",
    ".spz": "application/octet-stream",
    ".splat": "application/octet-stream",
    ".npz": "application/octet-stream",
    ".npy": "application/octet-stream",
    ".json": "application/json",
    ".usda": "text/plain; charset=utf-8",
    ".usdz": "model/vnd.usdz+zip",
    ".zip": "application/zip",
}
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def safe_filename(name: str, default: str = "file") -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]`` (at most 120 characters, no leading dot)."""
    clean = _NAME_RE.sub("_", Path(str(name or "")).name).lstrip(".")[-120:]
    return clean or default


def content_type(filename: str) -> tuple[str, bool]:
    """``(media type, inline allowed)`` for a filename: unknown types are attachments."""
    media = INLINE_TYPES.get(Path(filename).suffix.lower())
    return (media, True) if media else ("application/octet-stream", False)


def load_secret(data_dir: Path, configured: str | None = None) -> bytes:
    """The server's URL-signing secret: ``configured`` (e.g. ``$LOCI_FILE_SECRET``), else the
    file ``data_dir/file-secret`` (32 random bytes, mode 0600), created once atomically so
    processes sharing a data directory agree on it."""
    if configured:
        return hashlib.sha256(configured.encode("utf-8")).digest()
    path = Path(data_dir) / "file-secret"
    for _ in range(3):
        try:
            data = path.read_bytes()
            if len(data) >= 32:
                return data[:32]
        except FileNotFoundError:
            pass
        tmp = path.with_name(f".file-secret.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made it first: then read theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    raise RuntimeError(f"could not read or create the file-signing secret at {path}")


class Throttle:
    """Refusals per client (e.g. an IP address) in a sliding window; past ``limit`` the client
    must wait until its oldest refusal leaves the window. Bounded memory: at most
    ``max_clients`` clients are remembered (least recent forgotten first)."""

    def __init__(self, limit: int = 20, window_s: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit, self.window_s, self.max_clients = int(limit), float(window_s), max_clients
        self._fails: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds ``client`` must wait before it may try again (0: it may)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._fails.get(client)
            if q is None:
                return 0.0
            while q and q[0] <= now - self.window_s:
                q.popleft()
            if len(q) < self.limit:
                return 0.0
            return max(0.0, q[0] + self.window_s - now)

    def failed(self, client: str, now: float | None = None) -> None:
        """Count one refusal (a wrong key or a forged link) against ``client``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._fails.pop(client, None) or collections.deque(maxlen=self.limit + 1)
            q.append(now)
            self._fails[client] = q
            while len(self._fails) > self.max_clients:
                self._fails.popitem(last=False)


class LinkError(Exception):
    """A refused file request: ``status`` (HTTP) and a one-line reason for the log and client."""

    def __init__(self, status: int, reason: str, counts: bool = False) -> None:
        super().__init__(reason)
        self.status, self.reason, self.counts = status, reason, counts


@dataclass(frozen=True)
class Grant:
    """What a valid link allows: one file of one project, under one name, until ``expires``."""

    project_id: str
    sha256: str
    filename: str
    download: bool
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FileLinks:
    """Signs file URLs for a project's stored files and checks them on every request."""

    def __init__(
        self,
        repo: Repository,
        store: ArtifactStore,
        secret: bytes,
        *,
        base: str = "",
        ttl_s: float = 1800.0,
        throttle: Throttle | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo, self.store, self._secret = repo, store, bytes(secret)
        self.base = base.rstrip("/")
        self.ttl_s = float(ttl_s)
        self.throttle = throttle or Throttle()
        self.clock = clock

    # ---- issuing ------------------------------------------------------------------------------
    def url(
        self,
        project_id: str,
        key: str,
        sha256: str,
        filename: str,
        *,
        download: bool = False,
        ttl_s: float | None = None,
    ) -> str:
        """A root-relative URL for one stored file of a project (see the module docstring).

        Raises Forbidden (wrong key), NotFound (no such project, or the file is not one of its
        files). ``ttl_s`` shortens or lengthens the default lifetime (at most 24 h).
        """
        project, _ = self.repo.open_project(project_id, key)  # Forbidden / NotFound
        sha = (sha256 or "").lower()
        if not _SHA_RE.match(sha) or not self.belongs(project.id, sha):
            raise NotFound("That file is not part of this project.")
        name = safe_filename(filename)
        ttl = min(float(self.ttl_s if ttl_s is None else ttl_s), 86_400.0)
        expires = int(self.clock() + max(ttl, 1.0))
        payload = [1, project.id, sha, name, int(bool(download)), expires, self._bind(project, key)]
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{self.base}{FILES_PREFIX}/{body}.{self._sign(body)}/{name}"

    def belongs(self, project_id: str, sha256: str) -> bool:
        """True when ``sha256`` is an artifact of one of the project's steps or a frame file."""
        with self.repo.db.read_session() as s:
            cells = select(HistoryCell.id).where(HistoryCell.project_id == project_id)
            linked = select(CellArtifact.sha256).where(
                CellArtifact.cell_id.in_(cells), CellArtifact.sha256 == sha256
            )
            if s.scalars(linked.limit(1)).first() is not None:
                return True
            frame = select(WorldFrame.id).where(
                WorldFrame.cell_id.in_(cells),
                or_(
                    WorldFrame.rgb_sha256 == sha256,
                    WorldFrame.depth_sha256 == sha256,
                    WorldFrame.mask_sha256 == sha256,
                ),
            )
            return s.scalars(frame.limit(1)).first() is not None

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._secret, b"loci-file-url|" + body.encode(), hashlib.sha256)
        return _b64(mac.digest()[:20])

    def _bind(self, project: Project, key: str) -> str:
        # Which key the link was made for, without revealing it: HMAC of the stored key hash.
        digest = hashlib.sha256((key or "").encode()).hexdigest()
        return self._binding(project.id, digest)

    def _binding(self, project_id: str, key_hash: str) -> str:
        mac = hmac.new(self._secret, f"bind|{project_id}|{key_hash}".encode(), hashlib.sha256)
        return _b64(mac.digest()[:12])

    # ---- checking -----------------------------------------------------------------------------
    def check(self, token: str, filename: str) -> Grant:
        """The grant of a link, or LinkError (see the module docstring for what is checked)."""
        body, _, sig = (token or "").partition(".")
        if not body or not sig or len(token) > 2048:
            raise LinkError(400, "malformed file link", counts=True)
        if not hmac.compare_digest(sig, self._sign(body)):
            raise LinkError(403, "file link with a bad signature", counts=True)
        try:
            v, pid, sha, name, download, expires, bind = json.loads(_unb64(body))
        except (ValueError, TypeError) as exc:
            raise LinkError(400, "malformed file link", counts=True) from exc
        if v != 1:
            raise LinkError(400, "file link from another version")
        if name != filename:
            raise LinkError(403, "file link used under another name", counts=True)
        if self.clock() > expires:
            raise LinkError(410, "file link expired: reload the page for a fresh one")
        with self.repo.db.read_session() as s:
            project = s.get(Project, pid)
            if project is None or project.deleted_at is not None:
                raise LinkError(404, "the project of this file link is gone")
            bindings = (self._binding(pid, project.edit_key_hash),
                        self._binding(pid, project.view_key_hash))  # fmt: skip
        if not any(hmac.compare_digest(bind, b) for b in bindings):
            raise LinkError(403, "file link for a key that no longer opens the project", True)
        return Grant(pid, sha, name, bool(download), int(expires))

    def respond(self, token: str, filename: str, client: str, headers: Any = None) -> Any:
        """The HTTP response for a request (Starlette): the file, or a short refusal."""
        from starlette.responses import FileResponse, PlainTextResponse

        wait = self.throttle.retry_after(client)
        if wait > 0:
            log.info("file link refused (429) for %s: too many bad links", client)
            return PlainTextResponse("Too many bad file links; try again later.", 429,
                                     {"Retry-After": str(int(wait) + 1)})  # fmt: skip
        try:
            grant = self.check(token, filename)
            if not self.store.is_local:  # a bucket: straight from it, by a short presigned URL
                return self._redirect(grant)
            try:
                path = self.store.path_of(grant.sha256)
            except NotFound as exc:
                raise LinkError(404, "the file of this link is missing from the store") from exc
        except LinkError as err:
            if err.counts:
                self.throttle.failed(client)
            log.info("file link refused (%d) for %s: %s", err.status, client, err.reason)
            return PlainTextResponse(err.reason.capitalize() + ".", err.status,
                                     {"X-Content-Type-Options": "nosniff"})  # fmt: skip
        media, inline_ok = content_type(grant.filename)
        left = max(0, int(grant.expires - self.clock()))
        return FileResponse(
            path,
            media_type=media,
            filename=grant.filename,
            content_disposition_type="inline" if inline_ok and not grant.download else "attachment",
            headers={
                "ETag": f'"{grant.sha256}"',
                "Cache-Control": f"private, max-age={left}",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Referrer-Policy": "no-referrer",
                "Cross-Origin-Resource-Policy": "same-origin",
            },
        )

    def _redirect(self, grant: Grant) -> Any:
        from starlette.responses import RedirectResponse

        _, inline_ok = content_type(grant.filename)
        left = max(1, min(int(grant.expires - self.clock()), 300))
        url = self.store.presigned_url(grant.sha256, expires_s=left, filename=grant.filename,
                                       download=grant.download or not inline_ok)  # fmt: skip
        return RedirectResponse(url, 307, {"Cache-Control": "no-store",
                                           "Referrer-Policy": "no-referrer"})  # fmt: skip

    def routes(self) -> list[Any]:
        """The Starlette route of :meth:`respond`, for the studio's web app."""
        from starlette.routing import Route

        def endpoint(request: Any) -> Any:
            client = request.client.host if request.client else "unknown"
            p = request.path_params
            return self.respond(p["token"], p["filename"], client)

        return [Route(FILES_PREFIX + "/{token}/{filename}", endpoint, methods=["GET", "HEAD"])]


class SecurityHeaders:
    """ASGI middleware: ``X-Content-Type-Options: nosniff`` on every response of the app (so a
    file, whatever its bytes, is never sniffed into a page), unless a route already set it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message.get("type") == "http.response.start":
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"x-content-type-options" for k, _ in raw):
                    raw.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def handoff(src: Path, filename: str, folder: Path, secret: bytes) -> Path:
    """A copy of ``src`` under a readable name, for a Gradio component to pick up.

    Gradio serves what a handler returns from its own cache, so the studio hands it files from
    ``folder`` (inside Gradio's temp dir, never the data dir): ``folder/<id>/<filename>``, a
    hard link when the filesystems allow, else a copy. ``<id>`` is an HMAC of the source, its
    size and time and the name, so the same file is handed over once and its path cannot be
    guessed from the content's hash. Written under a unique temporary name and renamed, so
    concurrent requests for the same file never see a half-written one.
    """
    src = Path(src)
    st = src.stat()
    name = safe_filename(filename)
    tag = f"{src}|{st.st_size}|{st.st_mtime_ns}|{name}".encode()
    ident = hmac.new(secret, b"handoff|" + tag, hashlib.sha256).hexdigest()[:32]
    target = Path(folder) / ident / name
    if target.is_file() and target.stat().st_size == st.st_size:
        os.utime(target.parent)  # recently used: pruned later
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.{secrets.token_hex(8)}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def prune_folder(folder: Path, older_than_s: float) -> int:
    """Remove the entries of ``folder`` not touched for ``older_than_s`` seconds; returns how
    many. Entries another process removes first are skipped."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_s, 0
    for entry in folder.iterdir():
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed += 1
        except OSError:
            pass
    return removed
