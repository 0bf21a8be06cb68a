"""The docs tell the truth: README.md stays short, links resolve, and what they quote is what the code does.

Why: docs drift silently. Every command, option and `make` target they mention must exist, and every number they
quote that the code can compute (parameter counts, the chunk and split counts on the real LJ Speech durations) is
recomputed here, so a change to the code that makes a sentence false fails a test instead of misleading a reader.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from hybridlm.cli import app
from hybridlm.workspace import merge

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINKED_PAGES = [*PAGES, ROOT / "data" / "README.md", ROOT / "metrics" / "README.md"]
README_MAX_LINES = 200

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def code_snippets(text: str) -> list[str]:
    """Every fenced block (one snippet per line) and every inline code span: where commands are written."""
    blocks = FENCE.findall(text)
    lines = [line for block in blocks for line in block.splitlines()[1:-1]]
    return lines + SPAN.findall(FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (except - and _), spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {github_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep <= {README_MAX_LINES}, move detail to docs/"


def test_every_docs_page_is_linked_from_the_readme():
    links = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text("utf-8"))}
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in links]
    assert not unlinked, f"README.md does not link docs/{unlinked}"


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto: ...
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading with anchor #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


# ------------------------------------------------------------------------------------- commands, options, targets
COMMAND = re.compile(r"(?:^|[\s/])hybridlm ([a-z][a-z-]*)([^#;&|]*)")
OPTION = re.compile(r"(?<!\S)(--?[A-Za-z][\w-]*)")


def cli_options() -> dict[str, set[str]]:
    """Every `hybridlm` subcommand and its options, asked of the Typer app itself."""
    group = typer.main.get_command(app)
    return {name: {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
            for name, cmd in group.commands.items()}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_hybridlm_command_and_option_mentioned_exists(page):
    commands = cli_options()
    wrong = []
    for snippet in code_snippets(page.read_text(encoding="utf-8")):
        for match in COMMAND.finditer(snippet):
            name, rest = match.groups()
            if name not in commands:
                wrong.append(f"`hybridlm {name}`: no such command (commands: {sorted(commands)})")
                continue
            wrong += [f"`hybridlm {name} {opt}`: no such option (options: {sorted(commands[name])})"
                      for opt in OPTION.findall(rest) if opt not in commands[name]]
    assert not wrong, f"{page.relative_to(ROOT)}: {wrong}"


def required_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    return {name: {param.opts[0] for param in cmd.params if param.required and param.param_type_name == "option"}
            for name, cmd in group.commands.items()}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_in_console_blocks_can_run_as_written(page):
    """A `hybridlm` line in a fenced block is a command to copy: it must pass every required option."""
    required = required_options()
    text = page.read_text(encoding="utf-8")
    missing = []
    for line in (line for block in FENCE.findall(text) for line in block.splitlines()[1:-1]):
        for match in COMMAND.finditer(line):
            name, rest = match.groups()
            given = set(OPTION.findall(rest))
            if name in required and "--help" not in given and required[name] - given:
                missing.append(f"{line.strip()!r} lacks {sorted(required[name] - given)}")
    assert not missing, f"{page.relative_to(ROOT)}: {missing}"


PARAM_KEY = re.compile(r"(?<![\w./-])([a-z_]+(?:\.[a-z_0-9]+)+)\b(?![./(\w])")
FILE_SUFFIXES = {"py", "json", "yaml", "md", "pt", "tsv", "csv", "parquet", "wav", "png", "html", "txt", "lock", "flac"}


def params_keys_mentioned(text: str, sections: set[str]) -> set[str]:
    """`section.key` (and `section.sub.key`) names in code, for sections params.yaml has; file names excluded."""
    found = set()
    for snippet in code_snippets(text):
        for name in PARAM_KEY.findall(snippet):
            parts = name.split(".")
            if parts[0] in sections and parts[-1] not in FILE_SUFFIXES:
                found.add(name)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_param_mentioned_exists_in_params_yaml(page):
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    unknown = []
    for name in sorted(params_keys_mentioned(page.read_text(encoding="utf-8"), set(params))):
        node = params
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                unknown.append(name)
                break
            node = node[part]
    assert not unknown, f"{page.relative_to(ROOT)} mentions params that params.yaml does not have: {unknown}"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {t for line in re.findall(r"^([\w.-][\w. -]*?)\s*:(?!=)", text, re.M) for t in line.split()}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_mentioned_exists(page):
    targets = make_targets()
    mentioned = {m for snippet in code_snippets(page.read_text(encoding="utf-8"))
                 for m in re.findall(r"(?:^|\s)make ([a-z][\w-]*)", snippet)}
    assert mentioned <= targets, f"{page.relative_to(ROOT)}: no Makefile target {sorted(mentioned - targets)}"


def test_the_snippet_parsers_see_what_they_should():
    """Guards the checks above against passing vacuously because a regex stopped matching."""
    text = "run `make demo`, then\n```console\n$ .venv/bin/hybridlm bench --repeats 5 --x  # c --y\n```\n"
    assert code_snippets(text) == ["$ .venv/bin/hybridlm bench --repeats 5 --x  # c --y", "make demo"]
    match = COMMAND.search(code_snippets(text)[0])
    assert match.group(1) == "bench" and OPTION.findall(match.group(2)) == ["--repeats", "--x"]
    assert "pip install hybridlm[cuda]" not in [m.group(0) for m in COMMAND.finditer("pip install hybridlm[cuda]")]
    assert {"demo", "test", "install", "bench"} <= make_targets()
    assert params_keys_mentioned("`train.steps=12000`, `data.synthetic.clips`, `stages/train.py`, `train.json`, "
                                 "`hybridlm.data.shards`, `model.py`", {"train", "data", "model"}) == \
        {"train.steps", "data.synthetic.clips"}
    assert github_slug("Gated DeltaNet kernels (`hybridlm/ops/gated_delta.py`)") == \
        "gated-deltanet-kernels-hybridlmopsgated_deltapy"


# ------------------------------------------------------------------------------------------------ parameter counts
def info_counts(params: dict, tmp_path: Path, name: str) -> dict[str, int]:
    """`hybridlm info` for a params mapping: {component: count}, 'total' (the unconditional model) included, and
    'with text' when it also reports what text conditioning adds."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    result = CliRunner().invoke(app, ["info", "--params", str(path)])
    assert result.exit_code == 0, result.output
    counts = {m.group(1): int(m.group(2).replace(",", ""))
              for m in re.finditer(r"^\s+(\S.*?)\s{2,}([\d,]+)\b", result.output, re.M)}
    counts.update({"with text": int(m.replace(",", "")) for m in re.findall(r"-> ([\d,]+)", result.output)})
    assert "total" in counts, result.output
    return counts


@pytest.fixture(scope="module")
def documented_models(tmp_path_factory) -> dict[str, dict[str, int]]:
    """The configurations the docs quote counts for, counted by the code."""
    tmp = tmp_path_factory.mktemp("params")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    demo = yaml.safe_load((ROOT / "params.demo.yaml").read_text(encoding="utf-8"))
    configs = {
        "default": params,
        "pure attention": merge(params, {"model": {"schedule": "AAAAAAAA"}}),
        "pure GDN": merge(params, {"model": {"schedule": "LLLLLLLL"}}),
        "matched attention": merge(params, {"model": {"schedule": "AAAAAAAA", "d_ff": 1350}}),
        "demo": merge(params, demo),
    }
    return {name: info_counts(config, tmp, name.replace(" ", "-")) for name, config in configs.items()}


# "21,905,416 parameters", "21.9M-parameter", "~0.9M parameters", "1,172,584 (1.2M) params"
QUOTED_COUNT = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?M)\)?\s*(?:\([^)]*\)\s*)?-?param(?:eter)?s?\b")


def test_parameter_counts_quoted_are_what_the_code_computes(documented_models):
    """Every "N parameters" in the docs is a number `hybridlm info` prints for a documented configuration."""
    counts = {n for m in documented_models.values() for n in m.values()}
    allowed = {f"{n:,}" for n in counts} | {f"{n / 1e6:.1f}M" for n in counts}
    files = [*PAGES, ROOT / "params.yaml", ROOT / "params.demo.yaml", ROOT / "Makefile"]
    quoted = {(f.name, q) for f in files for q in QUOTED_COUNT.findall(f.read_text(encoding="utf-8"))}
    assert any(q == "21,905,416" for _, q in quoted)  # the pattern still finds the README's count
    stale = sorted((name, q) for name, q in quoted if q not in allowed)
    assert not stale, f"parameter counts quoted that no documented config has: {stale} (computed: {sorted(allowed)})"
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    quoted = [(name, "total") for name in documented_models] + [("default", "added"), ("default", "with text")]
    missing = [f"{name} {key}" for name, key in quoted if f"{documented_models[name][key]:,}" not in text]
    assert not missing, f"docs do not quote the parameter count of: {missing}"


def test_parameter_count_table_matches_hybridlm_info(documented_models):
    text = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    section = text.split("## Parameter count", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|(.+?)\|\s*\**([\d,]+)\**\s*\|$", section, re.M)
    assert len(rows) >= 5, section
    counts = set(documented_models["default"].values())
    wrong = [(label.strip(), n) for label, n in rows if int(n.replace(",", "")) not in counts]
    assert not wrong, f"docs/model.md parameter table rows that `hybridlm info` does not print: {wrong}"


# ------------------------------------------------------------------------------------ chunk and split counts
def test_chunk_and_split_counts_quoted_match_the_chunking_code(shared):
    from test_data_chunks_split import DURATIONS, seconds_to_samples

    from hybridlm.data.chunking import ChunkRule, chunk_bounds
    from hybridlm.data.split import val_clips

    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    tok, split = params["tokenize"], params["split"]
    rule = ChunkRule.from_seconds(tok["chunk_seconds"], tok["min_tail_seconds"], 24_000, 320)
    rows = [line.split("\t") for line in shared(DURATIONS).read_text(encoding="utf-8").splitlines()]
    pieces = {cid: len(chunk_bounds(seconds_to_samples(float(s)), rule)) for cid, s in rows}
    held_out = val_clips(pieces, split["val_fraction"], seed=split["seed"])
    val = sum(pieces[c] for c in held_out)
    total = sum(pieces.values())

    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    quoted_total = re.search(r"exactly \*\*([\d,]+)\*\* chunks", text)
    quoted_split = re.search(r"\*\*([\d,]+) train / ([\d,]+) val chunks\*\* \(([\d,]+) val clips\)", text)
    assert quoted_total and quoted_split, "docs/pipeline.md no longer states the chunk and split counts"
    assert quoted_total.group(1) == f"{total:,}"
    assert quoted_split.groups() == (f"{total - val:,}", f"{val:,}", f"{len(held_out):,}")
