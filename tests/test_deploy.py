"""``deploy/`` cannot rot silently: every command in the compose file and in the guides parses
with the real CLI (``app.py``'s parser, ``loci``'s, and ``ray start``'s when Ray is installed),
and every ``LOCI_*`` variable they set is one the studio reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import app
from studio.cli import build_parser as loci_parser
from studio.context import ENV_VARS, StudioContext

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.yaml"
GUIDES = [ROOT / "deploy" / "README.md", ROOT / "README.md"]
SERVICES = {"studio", "ray-head", "ray-worker", "postgres", "minio"}


def _compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text())


def _ray_start_options() -> set[str] | None:
    try:
        from ray.scripts.scripts import start
    except ImportError:
        return None
    return {opt for param in start.params for opt in param.opts}


def check_command(argv: list[str]) -> str:
    """Parse one command line with the real CLI; returns which CLI it was (AssertionError when
    a flag is unknown or a value is refused)."""
    if argv[:2] in (["python", "app.py"], ["python3", "app.py"]):
        try:
            app.build_parser().parse_args(argv[2:])
        except SystemExit as exc:
            raise AssertionError(f"app.py refuses {shlex.join(argv)}") from exc
        return "app"
    if argv[0] == "loci":
        try:
            loci_parser().parse_args(argv[1:])
        except SystemExit as exc:
            raise AssertionError(f"loci refuses {shlex.join(argv)}") from exc
        return "loci"
    if argv[:2] == ["ray", "start"]:
        known = _ray_start_options()
        if known is None:
            pytest.skip("Ray is not installed: pip install 'loci[scale]'")
        flags = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("-")}
        assert flags <= known, f"ray start has no {sorted(flags - known)}"
        return "ray"
    return "other"


def test_compose_services_match_the_cli_and_environment() -> None:
    spec = _compose()
    services = spec["services"]
    assert SERVICES <= set(services)
    seen = set()
    for name, svc in services.items():
        command = svc.get("command")
        if isinstance(command, list):
            seen.add(check_command([str(c) for c in command]))
        env = svc.get("environment") or {}
        loci_vars = {k for k in env if k.startswith("LOCI_")}
        assert loci_vars <= set(ENV_VARS), f"{name}: unknown {sorted(loci_vars - set(ENV_VARS))}"
    assert {"app", "ray"} <= seen
    # The studio's settings, built the way app.py builds them, are the scaled-out ones.
    studio = services["studio"]
    args = app.build_parser().parse_args([str(c) for c in studio["command"][2:]])
    env = {k: str(v) for k, v in studio["environment"].items()}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        ctx = StudioContext.from_env(executor=args.executor, ray_address=args.ray_address,
                                     ray_workers=args.ray_workers)  # fmt: skip
    assert ctx.executor == "ray" and ctx.ray_address.startswith("ray://ray-head:")
    assert ctx.db_url.startswith("postgresql+psycopg://") and "@postgres:" in ctx.db_url
    assert ctx.artifacts_url.startswith("s3://")
    head_port = next(c for c in services["ray-head"]["command"] if "client-server-port" in c)
    assert ctx.ray_address.endswith(":" + head_port.split("=")[1])
    for svc in ("ray-worker", "studio"):  # every process that writes frames can reach the bucket
        assert "AWS_ENDPOINT_URL" in services[svc]["environment"]


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.parent.name + "/" + p.name)
def test_guide_commands_parse(guide: Path) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", guide.read_text(), flags=re.S)
    commands = [
        shlex.split(line.split("#")[0])
        for block in blocks
        for line in block.splitlines()
        if re.match(r"\s*(python3? app\.py|ray start)", line)
    ]
    assert commands or guide.name == "README.md"
    for argv in commands:
        check_command(argv)
