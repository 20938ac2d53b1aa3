"""The container images, checked as far as a machine without docker can: the Dockerfiles' contents against
pyproject.toml, requirements.lock, the packages the components import and the names in pipeline/images.py."""
import ast
import importlib
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
DOCKERFILES = {"cpu": IMAGES / "Dockerfile.cpu", "gpu": IMAGES / "Dockerfile.gpu"}
FIRST_PARTY = {"pose", "components", "pipeline"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def tensorflow_cpu_pin() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in dependencies if re.match(r"tensorflow-cpu==", d)]
    return pin.split("==")[1]


@pytest.fixture
def image_names(monkeypatch):
    """pipeline/images.py as it resolves with no POSE_IMAGE_* overrides in the environment."""
    import pipeline.images

    monkeypatch.delenv("POSE_IMAGE_REGISTRY", raising=False)
    monkeypatch.delenv("POSE_IMAGE_TAG", raising=False)
    images = importlib.reload(pipeline.images)
    yield {"cpu": images.CPU_IMAGE, "gpu": images.GPU_IMAGE}
    monkeypatch.undo()
    importlib.reload(pipeline.images)


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_base_images_are_pinned_python_311(kind):
    bases = [args.split()[0] for op, args in instructions(DOCKERFILES[kind]) if op == "FROM"]
    assert bases, f"{DOCKERFILES[kind]} has no FROM"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires
    for base in bases:
        name, _, tag = base.rpartition(":")
        assert name and "/" not in tag, f"{base}: base image without a tag"
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{base}: tag must name an exact version"
        if name == "python":
            assert tag.startswith("3.11."), f"{base}: pyproject requires Python {requires}"


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_dockerfile_installs_the_lock_and_copies_every_imported_package(kind):
    steps = instructions(DOCKERFILES[kind])
    copied = {Path(source).parts[0] for op, args in steps if op == "COPY" for source in args.split()[:-1]}
    assert {"requirements.lock", "pyproject.toml"} <= copied
    runs = " && ".join(args for op, args in steps if op == "RUN")
    assert re.search(r"pip install (-r|.*-r) \S*requirements", runs), "the lock is not installed"
    assert "pip install --no-deps ." in runs
    imported = set()
    for module in (REPO / "components").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    needed = (imported & FIRST_PARTY) | {"components"}
    assert needed <= copied, f"{DOCKERFILES[kind]} does not copy {sorted(needed - copied)}"
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= copied
    assert "experiments" in copied, f"{DOCKERFILES[kind]} does not copy the training configs (experiments/)"
    ignore_file = IMAGES / f"{DOCKERFILES[kind].name}.dockerignore"
    ignored = [line.strip().rstrip("/") for line in ignore_file.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ignored[0] == "*", f"{ignore_file}: the context should be an allow-list (keeps .venv out)"
    assert {f"!{name}" for name in copied} <= set(ignored), f"{ignore_file} leaves out a copied path"


def test_gpu_image_swaps_tensorflow_cpu_for_the_cuda_build_of_the_same_version():
    runs = " ".join(args for op, args in instructions(DOCKERFILES["gpu"]) if op == "RUN")
    pins = re.findall(r"tensorflow\[and-cuda\]==([\w.]+)", runs)
    assert pins == [tensorflow_cpu_pin()]
    # The lock pins tensorflow_cpu: it must be filtered out before the lock is installed.
    assert re.search(r"^tensorflow[-_]cpu==", (REPO / "requirements.lock").read_text(), re.M)
    assert re.search(r"grep -v\w* '\^tensorflow\[-_\]cpu==' requirements\.lock", runs)
    cpu_runs = " ".join(args for op, args in instructions(DOCKERFILES["cpu"]) if op == "RUN")
    assert "and-cuda" not in cpu_runs


def test_documented_build_commands_use_the_names_of_pipeline_images(image_names):
    built = {}
    for readme in (REPO / "README.md", IMAGES / "README.md", *DOCKERFILES.values()):
        if not readme.exists():
            continue
        for line in readme.read_text().splitlines():
            if "docker build" not in line:
                continue
            words = shlex.split(line.lstrip("# "))
            dockerfile, tag = words[words.index("-f") + 1], words[words.index("-t") + 1]
            kind = Path(dockerfile).name.removeprefix("Dockerfile.")
            assert tag == image_names[kind], f"{readme}: builds {tag}, pipeline/images.py runs {image_names[kind]}"
            assert (REPO / dockerfile).exists()
            built.setdefault(kind, set()).add(readme.name)
    assert set(built) == {"cpu", "gpu"} and all("README.md" in where for where in built.values())


def test_every_component_runs_in_one_of_the_two_images():
    components = 0
    for module in [REPO / "pipeline" / "ops.py"]:
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("component"):
                    keywords = {k.arg: ast.unparse(k.value) for k in decorator.keywords}
                    assert keywords.get("base_image") in ("CPU_IMAGE", "GPU_IMAGE"), f"{module.name}: {node.name}"
                    assert keywords.get("install_kfp_package") == "False", f"{module.name}: {node.name}"
                    components += 1
    assert components == 9
