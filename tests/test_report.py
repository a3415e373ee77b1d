"""The benchmark report keeps one section per benchmark: a rerun replaces its own section only."""

import importlib.util
import re
import sys

import pytest

from conftest import ROOT


@pytest.fixture
def report(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "machine", lambda: "test machine")
    return module


def run_as(monkeypatch, script: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / script), *args])


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^(?=<!-- benchmark: )", text, flags=re.M)
    return {re.match(r"<!-- benchmark: (\S+) -->", p).group(1): p.strip() for p in parts[1:]}


def test_a_rerun_replaces_its_own_section_and_leaves_the_others(report, monkeypatch, tmp_path):
    target = tmp_path / "docs" / "benchmarks.md"
    run_as(monkeypatch, "overhead.py", "--quick")
    first = report.write("Tracking overhead", ["| a | b |", "| 1 | 2 |"], {"time_ratio": 1.5}, path=target)
    run_as(monkeypatch, "pruning.py")
    report.write("Pruning", ["pruned 17 of 20"], {"epochs_ratio": 0.25}, path=target)
    before = sections(target.read_text())
    assert list(before) == ["overhead", "pruning"] and first == "RESULT time_ratio=1.5"
    assert target.read_text().startswith(report.HEADER)

    run_as(monkeypatch, "overhead.py", "--repeats", "5")
    line = report.write("Tracking overhead", ["| a | b |", "| 3 | 4 |"], {"time_ratio": 1.25}, path=target)
    text = target.read_text()
    after = sections(text)
    assert list(after) == ["overhead", "pruning"]  # in its place, not appended
    assert text.count("## Tracking overhead") == 1 and "| 1 | 2 |" not in text and "time_ratio=1.5" not in text
    assert "| 3 | 4 |" in after["overhead"] and f"`{line}`" in after["overhead"] and line == "RESULT time_ratio=1.25"
    assert "- command: `python benchmarks/overhead.py --repeats 5`" in after["overhead"]
    assert after["pruning"] == before["pruning"]
    assert text.startswith(report.HEADER) and not (target.parent / "benchmarks.md.partial").exists()


def test_a_new_benchmark_is_appended_once_after_the_others(report, monkeypatch, tmp_path):
    target = tmp_path / "benchmarks.md"
    target.write_text(report.HEADER + "\n<!-- benchmark: scaling -->\n## Data-parallel scaling\n\nold numbers\n")
    run_as(monkeypatch, "metric_cost.py")
    for repeat in range(2):
        report.write("Metric cost (digits-dcgan)", [f"run {repeat}"], {"n": repeat}, path=target)
    text = target.read_text()
    assert list(sections(text)) == ["scaling", "metric_cost"] and text.count("## Metric cost") == 1
    assert "run 1" in text and "run 0" not in text
    assert sections(text)["scaling"] == "<!-- benchmark: scaling -->\n## Data-parallel scaling\n\nold numbers"


def test_the_shipped_report_has_one_section_per_benchmark_script(report):
    shipped = (ROOT / "docs" / "benchmarks.md").read_text()
    found = re.findall(r"^<!-- benchmark: (\S+) -->$", shipped, flags=re.M)
    assert len(found) == len(set(found))  # each benchmark's latest run only
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    assert set(found) <= scripts
