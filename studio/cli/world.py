"""``loci generate``, ``loci lift`` and ``loci export``: a photo becomes a world bundle, the bundle
becomes splats and a mesh, and those become files for viewers, engines and datasets.

``loci generate PHOTO --out DIR`` writes a world bundle (DESIGN.md). The bundle is built in a
hidden sibling folder and renamed into place at the end, so DIR is never left half-written;
bad input exits with status 2 and a message that says what to fix.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

from models.depth import create_depth_backend, depth_backend_names
from models.geometry.cameras import scale_intrinsics
from models.geometry.pointcloud import VoxelCloud, frame_points
from models.paths.trajectory import (
    MAX_FRAMES,
    PRESET_NAMES,
    Trajectory,
    TrajectoryError,
    make_preset,
)
from models.pipeline import MAX_WIDTH, PipelineConfig, WorldPipeline
from models.synthesis import synthesis_backend_names
from storage.formats.bundle import BundleWriter
from storage.formats.images import load_photo
from storage.formats.ply import write_pointcloud_ply
from storage.formats.video import VideoStream
from studio.backends import painter_record
from studio.cli.common import UsageError, check_numbers, progress

DEFAULT_FRAMES = 24
#: Ranges of the numeric options of ``loci generate`` (checked before anything is loaded).
GENERATE_LIMITS = {"frames": (1, MAX_FRAMES), "width": (64, MAX_WIDTH), "fov": (10, 150),
                   "fps": (0.1, 240), "steps": (1, 1000), "memory_stride": (1, MAX_FRAMES),
                   "max_retrieved": (1, 64), "seed": (0, 2**63 - 1),
                   "depth_scale": (1e-6, 1e9)}  # fmt: skip


def _build_pipeline(args: argparse.Namespace, notes: list[str]) -> WorldPipeline:
    from studio.backends import DEFAULT_DEPTH, build_depth, build_synthesis

    depth_name = args.depth or ("file" if args.depth_file else DEFAULT_DEPTH)
    if depth_name == "file":
        if not args.depth_file:
            raise UsageError("--depth file needs --depth-file PATH")
        depth = create_depth_backend("file", path=args.depth_file, scale=args.depth_scale)
    elif args.depth_file:
        raise UsageError(f"--depth-file only works with --depth file, not --depth {depth_name}")
    else:
        # --model names the synthesis model when synthesis uses weights, else the depth model.
        depth_model = args.depth_model or (args.model if args.synthesis == "reproject" else None)
        depth = build_depth(depth_name, depth_model, notes)
    synth_model = args.model if args.synthesis != "reproject" else None
    synthesis = build_synthesis(
        args.synthesis, synth_model, notes, **painter_options(args),
        lora=getattr(args, "lora", None), lora_scale=getattr(args, "lora_scale", None),
    )  # fmt: skip
    config = PipelineConfig(
        width=args.width,
        hfov_deg=args.fov,
        memory_stride=args.memory_stride,
        max_retrieved=args.max_retrieved,
        use_memory=not args.no_memory,
        seed=args.seed,
    )
    return WorldPipeline(depth=depth, synthesis=synthesis, config=config)


def painter_options(args: argparse.Namespace) -> dict[str, object]:
    """The painter options given on the command line (None: not given)."""
    area = args.run_area
    if area not in (None, "native", "trained"):
        if not str(area).isdigit() or int(area) < 16 * 16:
            raise UsageError("--run-area must be trained, native, or a number of pixels")
        area = int(area)
    return {
        "steps": args.steps,
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "preset": args.preset,
        "guidance_scale": args.guidance,
        "flow_shift": args.flow_shift,
        "chunk_size": args.chunk,
        "area": area,
        "offload": args.offload,
        "vram_gb": args.vram_gb,
        "force_cpu": args.force_cpu or None,
    }


def _load_path_file(path: str, photo_w: int, photo_h: int) -> Trajectory:
    traj = Trajectory.load(path)
    if abs(traj.width / traj.height - photo_w / photo_h) > 0.01 * photo_w / photo_h:
        raise TrajectoryError(
            f"the first camera of {path} is not the photo's camera: it is for {traj.width}x"
            f"{traj.height} images, but the photo is {photo_w}x{photo_h} (another aspect ratio)"
        )
    return traj


def cmd_generate(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    check_numbers(args, GENERATE_LIMITS)
    # A LoRA names its painter: --lora alone paints with it (auto), never with reproject.
    args.synthesis = args.synthesis or ("auto" if args.lora else "reproject")
    photo = load_photo(args.photo)
    ph, pw = photo.rgb.shape[:2]
    traj_file = args.path if args.path.endswith(".json") else None
    if traj_file is None and args.path not in PRESET_NAMES:
        raise UsageError(f"--path must be one of {', '.join(PRESET_NAMES)} or a .json file")
    traj = _load_path_file(traj_file, pw, ph) if traj_file else None
    notes: list[str] = []
    pipe = _build_pipeline(args, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    # Refuse an occupied --out before any work is done.
    writer = BundleWriter(args.out, overwrite=args.overwrite)

    if traj is not None:
        K_photo = scale_intrinsics(traj[0].K, (traj.width, traj.height), (pw, ph))
        world = pipe.seed(photo.rgb, K_photo, c2w=traj[0].c2w)
        cameras = [c.resized(world.width, world.height) for c in traj.cameras[1:]]
        if args.frames is not None and args.frames != len(traj):
            print(f"note: --frames ignored, {traj_file} has {len(traj)} frames", file=sys.stderr)
    else:
        world = pipe.seed(photo.rgb, focal_35mm=photo.focal_35mm, focal_mm=photo.focal_mm)
        n = args.frames or DEFAULT_FRAMES
        cameras = make_preset(
            args.path, world.cameras[0], n, up=world.up, scene_depth=world.scene_depth
        ).cameras[1:]
    for note in photo.notes:
        print(f"note: {note}", file=sys.stderr)

    # Sky backdrops sit at a far constant depth: keep them out of the preview cloud.
    max_depth = 10.0 * world.scene_depth
    cloud = VoxelCloud(voxel_size=max(world.scene_depth / 150.0, 1e-3))
    timings: list[dict[str, float]] = []
    with (
        writer as bundle,
        VideoStream(bundle.path("video.mp4"), world.width, world.height, fps=args.fps) as video,
    ):
        seed_event = world.seed_event
        bar = progress(1 + len(cameras), "generating", not args.quiet)
        for event in itertools.chain([seed_event], pipe.explore(world, cameras)):
            bundle.write_frame(
                event.index, event.rgb, event.depth, event.source_mask, event.record()
            )
            video.write(event.rgb)
            cloud.add(*frame_points(event.rgb, event.depth, event.camera, 2, max_depth))
            if event.index:
                timings.append(event.timings)
            bar.update(1)
        bar.close()
        xyz, rgb = cloud.points()
        write_pointcloud_ply(bundle.path("pointcloud.ply"), xyz, rgb)
        used = Trajectory(list(world.cameras))
        bundle.write_json("trajectory.json", used.to_dict())
        meta = world.meta()
        meta.update(
            source_photo=Path(args.photo).name,
            path=args.path if traj_file is None else Path(traj_file).name,
            memory=not args.no_memory,
            depth_meta=world.depth_meta,
            notes=notes,  # e.g. why auto depth fell back to the offline layout prior
            **painter_record(pipe.synthesis),
        )
        painter = getattr(pipe.synthesis, "info", None)
        if painter:  # which painter ran, with its settings and VRAM plan
            meta["painter"] = painter
            for note in painter.get("notes", [])[1:]:
                print(f"note: {note}", file=sys.stderr)
        bundle.finish(meta)
    elapsed = time.perf_counter() - t_start
    fps = len(timings) / max(1e-9, sum(t["total"] for t in timings)) if timings else 0.0
    print(
        f"wrote {args.out}: {len(world.cameras)} frames at {world.width}x{world.height}, "
        f"{len(xyz)} points, {elapsed:.1f} s ({fps:.1f} frames/s exploring)",
        file=sys.stderr,
    )
    return 0


def cmd_lift(args: argparse.Namespace) -> int:
    from studio.exports.lift import lift_bundle

    check_numbers(args, {"voxel": (1e-3, 10.0)})  # metres; per world in make_mesh
    if not (args.splats or args.mesh):
        args.splats = args.mesh = True
    bar = progress(int(args.splats) + int(args.mesh), "lifting", not args.quiet)
    info = lift_bundle(
        args.dir,
        splats=args.splats,
        mesh=args.mesh,
        voxel=args.voxel,
        progress=lambda step: (bar.set_postfix_str(step), bar.update(0)),
    )
    bar.update(bar.total - bar.n)
    bar.close()
    parts = []
    if "splats" in info:
        parts.append(f"{info['splats']['count']} splats")
    if "mesh" in info:
        parts.append(f"a mesh of {info['mesh']['faces']} faces")
    if info.get("backdrop"):
        parts.append(f"a sky / far backdrop of {info['backdrop']['faces']} faces (backdrop.ply)")
    print(f"lifted {args.dir}: {', '.join(parts)}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from studio.exports.lift import export_bundle

    path = export_bundle(args.dir, args.format, args.out)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``generate``, ``lift`` and ``export`` to the ``loci`` parser."""
    g = sub.add_parser("generate", help="photo + camera path -> world bundle")
    g.add_argument("photo", help="input photo (jpg, png, ...)")
    g.add_argument("--out", required=True, help="output folder (the world bundle)")
    g.add_argument(
        "--path",
        default="forward",
        help=f"{' | '.join(PRESET_NAMES)} | TRAJ.json (default forward)",
    )
    g.add_argument(
        "--frames", type=int, default=None, help=f"frames incl. the photo ({DEFAULT_FRAMES})"
    )
    g.add_argument("--width", type=int, default=512, help="working width, multiple of 8 (512)")
    g.add_argument("--fov", type=float, default=60.0, help="horizontal fov when EXIF has none")
    g.add_argument(
        "--depth",
        choices=[*depth_backend_names(), "auto"],
        default=None,
        help="depth backend (default auto: Depth Anything V2 if its weights are here or can "
        "be downloaded, else the offline layout prior, with a note)",
    )
    g.add_argument("--depth-model", default=None, help="hub id or local dir for the depth model")
    g.add_argument("--depth-file", default=None, help="depth for the photo (.npy or 16-bit .png)")
    g.add_argument("--depth-scale", type=float, default=None, help="PNG units per metre")
    g.add_argument(
        "--synthesis",
        choices=[*synthesis_backend_names(), "auto"],
        default=None,
        help="synthesis backend (default reproject, or the --lora's painter; auto = vace with "
        "local weights and CUDA, else sd-inpaint with local weights, else reproject)",
    )
    g.add_argument("--steps", type=int, default=None, help="denoising steps (model backends)")
    g.add_argument("--prompt", default=None, help="text prompt (model backends that take one)")
    p = g.add_argument_group("video painters (vace, wan-i2v)")
    p.add_argument("--negative-prompt", default=None, help="what to avoid (a default is set)")
    p.add_argument("--preset", choices=["fast", "default", "quality"], default=None,
                   help="12 / 30 / 50 steps (fast: previews); --steps wins")  # fmt: skip
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (5)")
    p.add_argument("--flow-shift", type=float, default=None, help="schedule shift (3; 5 at 720p)")
    p.add_argument("--chunk", type=int, default=None, help="frames per chunk (16)")
    p.add_argument("--run-area", default=None,
                   help="pixels the model runs at: trained (default), native, or a number")  # fmt: skip
    p.add_argument("--offload", default=None,
                   choices=["auto", "gpu", "text-offload", "model-offload", "group-offload"],
                   help="where the weights live on a GPU (auto: the VRAM planner decides)")  # fmt: skip
    p.add_argument("--vram-gb", type=float, default=None, help="VRAM budget for the planner")
    p.add_argument("--force-cpu", action="store_true",
                   help="run a video painter on a CPU even when it would take hours")  # fmt: skip
    g.add_argument("--model", default=None, help="hub id or local dir for a model backend")
    g.add_argument("--lora", default=None, help="a LoRA folder written by loci train run")
    g.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength (1 = trained)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-memory", action="store_true", help="ablation: previous frame only")
    g.add_argument("--memory-stride", type=int, default=1, help="every k-th frame joins memory")
    g.add_argument("--max-retrieved", type=int, default=4, help="memory frames per target")
    g.add_argument("--fps", type=float, default=12.0, help="video frame rate")
    g.add_argument("--overwrite", action="store_true", help="replace an existing world in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_generate)

    lf = sub.add_parser("lift", help="world bundle -> splats.ply and mesh.ply (in the bundle)")
    lf.add_argument("dir", help="world bundle folder")
    lf.add_argument("--splats", action="store_true", help="Gaussian splats (default: both)")
    lf.add_argument("--mesh", action="store_true", help="TSDF mesh (default: both)")
    lf.add_argument("--voxel", type=float, default=None, help="mesh voxel size in metres")
    lf.add_argument("--quiet", action="store_true")
    lf.set_defaults(func=cmd_lift)

    from studio.exports.lift import FORMATS

    ex = sub.add_parser("export", help="world bundle -> a viewer, engine or dataset format")
    ex.add_argument("dir", help="world bundle folder")
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", default=None, help="file or folder (default DIR/exports/...)")
    ex.set_defaults(func=cmd_export)
