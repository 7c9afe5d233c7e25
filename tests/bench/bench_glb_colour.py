"""Measurement: does the exported GLB look like the photo in three.js (issue 11: glTF COLOR_0 is
linear; sRGB bytes look washed out)?

Not collected by pytest. Needs Debian chromium, Playwright, and three.js from npm (not vendored
here)::

    npm install --prefix /tmp/three three@0.170.0
    .venv/bin/python tests/bench/bench_glb_colour.py --three /tmp/three/node_modules/three

A world (the living-room photo, 8 frames at 256 px) is generated and lifted; its mesh is written
as the GLB of this version, as the GLB main wrote before (trimesh: sRGB bytes in COLOR_0, no
material), and as OBJ. Each is rendered by three.js in headless chromium (SwiftShader) from the
first camera (``c2w_for_gltf_camera``), with a hemisphere light as a viewer would have; the
pixels the mesh covers are compared with frame 0 (PSNR, mean level). "unlit" forces
``MeshBasicMaterial`` with vertex colours (the colour space alone). Renders go to ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import shutil
import socketserver
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
PHOTO = HERE.parents[2] / "shared" / "data" / "photos" / "interior_living_room_geowizard.jpg"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # fmt: skip


def _files(work: Path, three: Path) -> None:
    import trimesh

    from models.geometry.cameras import c2w_for_gltf_camera, transform_points, world_to_gltf
    from storage.formats.bundle import read_bundle
    from studio.cli import main
    from studio.exports.lift import _load_mesh

    w = work / "w"
    assert main(["generate", str(PHOTO), "--out", str(w), "--frames", "8", "--width", "256",
                 "--quiet"]) == 0  # fmt: skip
    assert main(["lift", str(w), "--quiet"]) == 0
    for fmt, name in (("glb", "new.glb"), ("obj", "w.obj")):
        assert main(["export", str(w), "--format", fmt, "--out", str(work / name)]) == 0
    b = read_bundle(w)
    v, f, c = _load_mesh(b)
    up = np.asarray(b.world["up"])
    vy = transform_points(world_to_gltf(up), v.astype(np.float64)).astype(np.float32)
    rgba = np.concatenate([c, np.full((len(c), 1), 255, np.uint8)], 1)
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.Trimesh(vy, f, vertex_colors=rgba, process=False), "m", "m")
    (work / "old.glb").write_bytes(scene.export(file_type="glb"))
    i0 = b.indices[0]
    cam = c2w_for_gltf_camera(b.c2w(i0), up)
    (work / "cam.json").write_text(json.dumps({"matrix": cam.T.ravel().tolist(),
                                               "fy": b.K(i0)[1, 1], "W": b.width,
                                               "H": b.height}))  # fmt: skip
    cv2.imwrite(str(work / "frame0.png"), cv2.cvtColor(b.frame_rgb(i0), cv2.COLOR_RGB2BGR))
    shutil.copy(HERE / "glb_colour" / "index.html", work / "index.html")
    (work / "node_modules").mkdir()
    (work / "node_modules" / "three").symlink_to(three)


def run(three: Path, out: Path) -> dict:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="glbcolour-"))
    _files(work, three)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                          functools.partial(Quiet, directory=str(work)))  # fmt: skip
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ref = cv2.cvtColor(cv2.imread(str(work / "frame0.png")), cv2.COLOR_BGR2RGB).astype(float)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page()
        for label, query in (("before: GLB with sRGB bytes", "f=old.glb"),
                             ("before, unlit", "f=old.glb&basic=1"),
                             ("now: GLB", "f=new.glb"), ("OBJ", "f=w.obj")):  # fmt: skip
            page.goto(f"http://127.0.0.1:{srv.server_address[1]}/index.html?{query}")
            page.wait_for_function("window.done === true", timeout=120_000)
            url = page.evaluate("document.querySelector('canvas').toDataURL('image/png')")
            img = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",")[1]), np.uint8),
                               cv2.IMREAD_UNCHANGED)  # fmt: skip
            rgb, seen = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB).astype(float), img[..., 3] > 0
            mse = float(((rgb[seen] - ref[seen]) ** 2).mean())
            results[label] = {"psnr_db": round(10 * np.log10(255**2 / max(mse, 1e-9)), 1),
                              "mean": round(float(rgb[seen].mean())),
                              "photo_mean": round(float(ref[seen].mean())),
                              "coverage": round(float(seen.mean()), 2)}  # fmt: skip
            cv2.imwrite(str(out / f"{query.replace('&', '_').replace('=', '-')}.png"), img)
        browser.close()
    srv.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--three", type=Path, required=True, help="the npm 'three' package folder")
    p.add_argument("--out", type=Path, default=Path("glb_colour_renders"))
    args = p.parse_args()
    for label, r in run(args.three.resolve(), args.out).items():
        print(f"{label:30s} PSNR {r['psnr_db']:5.1f} dB  mean {r['mean']:3d} (photo "
              f"{r['photo_mean']})  coverage {r['coverage']:.2f}")  # fmt: skip
