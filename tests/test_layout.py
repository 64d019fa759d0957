"""The package's layers: science modules (arrays and tensors in, arrays and tensors out) import
no stage module, no figure module and no command line; the stages import no command line; and
no module imports itself through others (no cycle)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "microvae"
SCIENCE = ("synthetic", "ingest", "segment", "dataset", "crops", "descriptors", "model", "field",
           "diffusion", "device", "train", "sample", "evaluate", "novelty", "baselines", "volumes",
           "reconstruct3d", "volume_vae", "slice_generator")
FOUNDATION = ("errors", "atomic", "h5io", "tables", "config", "modelfile", "vti", "logs", "modes",
              "memory", "samplesfile")
UPPER = ("stages", "plots", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__") or "microvae"


def imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (relative or absolute, anywhere in it)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
        if path.name != "__init__.py" and "." not in name:
            package = ""
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                elif (node.module or "").startswith("microvae"):
                    target = node.module.removeprefix("microvae").strip(".")
                else:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}".strip(".")
                    found.add(sub if (PACKAGE / (sub.replace(".", "/") + ".py")).exists()
                              or (PACKAGE / sub.replace(".", "/")).is_dir() else target)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("microvae."):
                        found.add(alias.name.removeprefix("microvae."))
        graph[name] = {t for t in found if t and t != name}
    return graph


GRAPH = imports()


def test_the_graph_sees_the_known_imports():
    assert "train" in GRAPH["stages.train"] and "modelfile" in GRAPH["stages.train"]
    assert "config" in GRAPH["train"] and "stages" in GRAPH["cli"]


@pytest.mark.parametrize("module", SCIENCE + FOUNDATION)
def test_science_and_file_helpers_import_no_upper_layer(module):
    upper = {t for t in GRAPH[module] if t.split(".")[0] in UPPER}
    assert not upper, f"{module} imports {sorted(upper)}"


@pytest.mark.parametrize("module", FOUNDATION)
def test_file_helpers_import_no_science(module):
    science = {t for t in GRAPH[module] if t.split(".")[0] in SCIENCE}
    # the model files hold a VAE and its diffusion prior: their classes build them
    assert science <= {"model", "diffusion"} if module == "modelfile" else not science, science


def test_stages_import_no_command_line():
    for module, targets in GRAPH.items():
        if module.startswith("stages"):
            assert "cli" not in targets, module


def test_every_module_is_in_a_layer():
    layers = set(SCIENCE + FOUNDATION + UPPER)
    assert {m.split(".")[0] for m in GRAPH} - {"microvae", "__main__"} <= layers


def test_no_cycle():
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for target in GRAPH.get(module, ()):
            if state.get(target) == "open":
                raise AssertionError(" -> ".join([*path, module, target]))
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [])


def test_the_benchmark_times_the_real_training_step():
    source = (PACKAGE.parents[1] / "benchmarks" / "speed" / "train_throughput.py").read_text()
    assert "from microvae.train import" in source and "train_step" in source
    assert "loss.backward()" not in source


def test_the_command_line_starts_without_torch():
    """`microvae --help` and the data stages do not import PyTorch (2 s on a small CPU): the
    command line stays quick to start, and each of the many short jobs with it."""
    import subprocess
    import sys

    code = ("import sys, microvae.cli, microvae.stages.data; "
            "microvae.cli.build_parser(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(PACKAGE.parent)}, check=True)
    assert out.stdout.strip() == "False"


def test_the_morphology_steps_are_segments():
    from microvae.segment import MORPHOLOGY_DEFAULTS
    from microvae.stages import MORPHOLOGY_STEPS

    assert MORPHOLOGY_STEPS == tuple(MORPHOLOGY_DEFAULTS["grey"])


SAMPLES_FILE_PREFIXES = ("noise/", "large/", "interpolation/", "conditioned/", "graded/",
                         "targets/", "finished/", "finish/")
SAMPLES_FILE_NAMES = ("posterior_index", "noise_index", "reconstruction_bce")


def test_only_the_samples_file_module_spells_its_keys():
    """samples.h5 has one owner (samplesfile.py): no other module writes a key of its layout
    as a string (a renamed key would silently miss its readers)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "samplesfile.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text.startswith(SAMPLES_FILE_PREFIXES) or text in SAMPLES_FILE_NAMES:
                    found.append(f"{path.name}:{node.lineno}: {text!r}")
    assert not found, "\n".join(found)


def test_the_readme_is_a_user_guide_with_the_two_commands_first():
    """Issue 25: at most ~220 lines, the set-up and test commands on the first screen; results
    live in docs/."""
    lines = (PACKAGE.parents[1] / "README.md").read_text().splitlines()
    assert len(lines) <= 220, len(lines)
    first_screen = "\n".join(lines[:30])
    assert "bash scripts/install.sh && snakemake --cores all" in first_screen
    assert "bash scripts/install.sh --test && python -m pytest" in first_screen


def test_no_stage_module_imports_a_sibling_stage():
    """Stage modules share helpers through the stages package (stages/__init__.py), never
    through each other: each stage can be read, moved or run on its own."""
    stages = {m for m in GRAPH if m.startswith("stages.")}
    for module in stages:
        siblings = GRAPH[module] & stages
        assert not siblings, f"{module} imports {sorted(siblings)}"


def test_one_word_per_stage_group_in_rule_files_stage_modules_and_command_line():
    """The same stage groups under the same words: workflow/rules/{group}.smk,
    microvae/stages/{group}.py and the command line's "# --- {group}" headings; and no stage
    function is named as the science module it calls."""
    import re

    root = PACKAGE.parents[1]
    rules = {p.stem for p in (root / "workflow" / "rules").glob("*.smk")} - {"common"}
    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__"}
    headings = set(re.findall(r"^# --- (\w+) -+$", (PACKAGE / "cli.py").read_text(), re.M))
    assert rules == stages == headings
    for path in (PACKAGE / "stages").glob("*.py"):
        functions = {node.name for node in ast.parse(path.read_text()).body
                     if isinstance(node, ast.FunctionDef)}
        assert not functions & set(SCIENCE), path.name


def test_benchmarks_are_split_into_speed_and_studies_and_every_result_is_mapped():
    """benchmarks/: speed scripts and studies apart, machine.py shared; every result file is
    named in benchmarks/results/README.md beside the claim it supports."""
    benchmarks = PACKAGE.parents[1] / "benchmarks"
    assert sorted(p.name for p in benchmarks.glob("*.py")) == ["machine.py"]
    assert list((benchmarks / "speed").glob("*.py")) and list((benchmarks / "studies").glob("*.py"))
    mapping = (benchmarks / "results" / "README.md").read_text()
    unmapped = [p.name for p in (benchmarks / "results").glob("*.json") if p.name not in mapping]
    assert not unmapped, unmapped
