"""The HTML report: sections present, images embedded, verdict computed from the numbers, failures shown."""

import re

from atomtune.report import render_report
from atomtune.report.summary import verdict


def test_verdict_names_best_model_and_ratio(campaign_results):
    lines = verdict(campaign_results)
    force = next(line for line in lines if line.startswith("force MAE"))
    assert "best chgnet-0.3.0+lora 40" in force
    assert "vs zero-shot chgnet-0.3.0 180 (4.5× lower)" in force
    eos = next(line for line in lines if line.startswith("eos bulk_modulus_gpa"))
    assert "closest to GPAW PBE: chgnet-0.3.0+lora" in eos
    assert any("1 step(s) failed" in line for line in lines)


def test_report_is_self_contained_with_all_sections(campaign_results, tmp_path):
    path = render_report(campaign_results, tmp_path / "report.html")
    text = path.read_text()
    for section in ("summary", "data", "errors", "finetune", "scans", "tasks", "task-eos", "failures"):
        assert f"id='{section}'" in text, section
    images = re.findall(r"<img [^>]*src='([^']+)'", text)
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in text and "https://" not in text
    assert "Ni &lt;alloy&gt; demo" in text  # escaped
    assert "learning rate 5 makes no sense" in text and "errors chgnet-0.3.0+freeze" in text
    assert "force MAE Ni (meV/Å)" in text


def test_report_with_only_failures(tmp_path):
    results = {"name": "broken", "failures": [{"step": "data", "error": "file not found", "skipped_dependants": []}]}
    text = render_report(results, tmp_path / "r.html").read_text()
    assert "file not found" in text and "id='summary'" in text and "id='errors'" not in text


# -- issue 16: a malformed results file is one clear error naming the file ----------------------------------------------


def _report_cli(path, tmp_path):
    from typer.testing import CliRunner

    from atomtune.cli import app

    return CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "r.html")])


def test_report_on_malformed_json_names_the_file_and_place(tmp_path):
    from atomtune.exceptions import AtomtuneError

    broken = tmp_path / "results.json"
    broken.write_text('{"name": "ni-demo",\n "errors": {"a": 1,}\n}')
    result = _report_cli(broken, tmp_path)
    assert isinstance(result.exception, AtomtuneError), result.exception
    assert str(broken) in str(result.exception) and "line 2" in str(result.exception)
    assert not (tmp_path / "r.html").exists()


def test_report_on_wrong_json_shapes_names_the_file_and_key(tmp_path):
    from atomtune.exceptions import AtomtuneError

    cases = {
        "list.json": ("[1, 2, 3]", "a JSON object"),
        "errors.json": ('{"name": "x", "errors": [1, 2]}', "'errors'"),
        "failures.json": ('{"name": "x", "failures": {"step": "data"}}', "'failures'"),
        "binary.json": (b"\xff\xfe\x00garbage", "UTF-8"),
        "empty.json": ("", "empty"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        result = _report_cli(path, tmp_path)
        assert isinstance(result.exception, AtomtuneError), (name, result.exception)
        assert str(path) in str(result.exception) and expected in str(result.exception), (name, result.exception)


def test_report_reads_a_valid_results_file(campaign_results, tmp_path):
    import json

    from atomtune.report import read_results

    path = tmp_path / "results.json"
    path.write_text(json.dumps(campaign_results))
    assert read_results(path) == campaign_results
    result = _report_cli(path, tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").stat().st_size > 1000
