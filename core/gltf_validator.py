"""The Khronos glTF-Validator (npm package ``gltf-validator``, installed by ``./studio setup`` into assets/web).

Every GLB the studio writes (assets, stickers, variants per marketplace) is checked with it; the marketplace checks
and the tests read its report. Runs ``node assets/web/validate_gltf.mjs FILE`` (about 0.3 s a file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent.parent / "assets" / "web"
SCRIPT = WEB_DIR / "validate_gltf.mjs"
PACKAGE = WEB_DIR / "node_modules" / "gltf-validator"
SETUP_HINT = "run ./studio setup (it installs Node.js and the npm packages in assets/web)"


class ValidatorMissing(RuntimeError):
    """Node.js or the gltf-validator package is not installed."""


@dataclass
class GltfReport:
    errors: int
    warnings: int
    infos: int
    messages: list[dict] = field(default_factory=list)
    """The validator's issues: code, message, severity (0 error, 1 warning, 2 info, 3 hint), pointer."""
    validator_version: str = ""

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def summary(self, limit: int = 5) -> str:
        """The first error messages in one line (for findings and test failures)."""
        errors = [f"{m.get('code')}: {m.get('message')} ({m.get('pointer', '')})" for m in self.messages
                  if m.get("severity") == 0]
        return "; ".join(errors[:limit]) or "no errors"


def validator_available() -> bool:
    return shutil.which("node") is not None and PACKAGE.is_dir()


def validate_gltf(path: Path, timeout_s: float = 120.0) -> GltfReport:
    """Run the Khronos validator on a .glb/.gltf file; raises ValidatorMissing when it is not installed."""
    node = shutil.which("node")
    if node is None or not PACKAGE.is_dir():
        raise ValidatorMissing(f"the Khronos glTF validator is not installed; {SETUP_HINT}")
    done = subprocess.run([node, str(SCRIPT), str(Path(path).resolve())], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"gltf-validator failed on {Path(path).name}: {done.stderr.strip()[-500:]}")
    report = json.loads(done.stdout)
    issues = report.get("issues", {})
    return GltfReport(errors=int(issues.get("numErrors", 0)), warnings=int(issues.get("numWarnings", 0)),
                      infos=int(issues.get("numInfos", 0)), messages=list(issues.get("messages", [])),
                      validator_version=str(report.get("validatorVersion", "")))
