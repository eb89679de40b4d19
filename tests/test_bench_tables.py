"""The results tables built from other results: issue 18's real-input table with its bars, and the int8 cost table."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from vdsr.bench.scripts import int8_cost, real_inputs
from vdsr.catalogue import shipped


def bench_file(path: Path, rows: list[tuple[str, str, float, str, float]]) -> Path:
    """A vdsr-bench --json file holding (dataset, degradation, scale, method, psnr) rows."""
    keys = ("dataset", "degradation", "scale", "method", "psnr")
    results = [dict(zip(keys, row, strict=True), ssim=0.9) for row in rows]
    path.write_text(json.dumps({"results": results}))
    return path


def test_the_real_input_table_holds_each_cell_against_its_bar_on_the_sets_tuned_on(tmp_path: Path) -> None:
    rows = [
        ("Set5", "jpeg:75", 2, "bicubic", 31.0),
        ("Set5", "jpeg:75", 2, "vdsr", 31.5),
        ("Set5", "jpeg:75", 2, "vdsr_real", 31.8),  # +0.8 over bicubic and +0.3 over vdsr: met, just
        ("Set5", "bicubic", 3, "bicubic", 30.0),
        ("Set5", "bicubic", 3, "vdsr", 33.0),
        ("Set5", "bicubic", 3, "vdsr_real", 32.95),  # within 0.10 of vdsr
        ("B100", "noise:5", 2, "bicubic", 29.0),
        ("B100", "noise:5", 2, "vdsr", 29.5),
        ("B100", "noise:5", 2, "vdsr_real", 29.2),  # under its bar, but B100 is only reported
        ("Set14", "bicubic", 2.5, "bicubic", 28.0),
        ("Set14", "bicubic", 2.5, "vdsr", 30.0),  # no vdsr_real: no row
    ]
    path = bench_file(tmp_path / "a.json", rows)
    text, all_met = real_inputs.table(real_inputs.read_cells([path]))
    assert all_met and text.count("| yes |") == 2 and "**no** (reported)" in text and "Set14" not in text
    assert real_inputs.main([str(path), "--markdown", str(tmp_path / "t.md")]) == 0 and (tmp_path / "t.md").is_file()

    failing = bench_file(tmp_path / "b.json", [*rows[:5], ("Set5", "bicubic", 3, "vdsr_real", 32.89)])
    text, all_met = real_inputs.table(real_inputs.read_cells([failing]))
    assert not all_met and "| **no** |" in text and real_inputs.main([str(failing)]) == 1
    assert real_inputs.table({})[1] is False  # an empty table meets nothing


def test_the_int8_cost_table_keeps_earlier_columns_whose_graphs_are_gone(tmp_path: Path) -> None:
    graph = str(shipped("vdsr_int8.onnx"))
    runner = CliRunner()
    first = runner.invoke(int8_cost.app, [f"one={graph}", "--output", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        int8_cost.app,
        [f"two={graph}", "--output", str(tmp_path / "second"), "--previous", str(tmp_path / "first.json")],
    )
    assert second.exit_code == 0, second.output
    results = json.loads((tmp_path / "second.json").read_text())
    assert list(results["graphs"]) == ["one", "two"] and results["graphs"]["one"] == results["graphs"]["two"]
    assert "one=" in results["previous"][0]["command"]
    table = (tmp_path / "second.md").read_text()
    assert "| one | two |" in table and table.count("Command: `") == 2
    assert "--previous" not in results["previous"][0]["command"]  # the first run's own environment
    good = json.loads((tmp_path / "first.json").read_text())
    for bad in (
        [],
        {"graphs": {"a": {}}, "environment": {}},
        {**good, "previous": 5},
        {**good, "previous": [1]},
        {**good, "graphs": {"a": {**good["graphs"]["one"], "cost_db": [1]}}},
    ):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        refused = runner.invoke(
            int8_cost.app, [f"two={graph}", "--output", str(tmp_path / "x"), "--previous", str(tmp_path / "bad.json")]
        )
        assert refused.exit_code == 2 and not list(tmp_path.glob("x.*")), bad  # a usage error; nothing written
