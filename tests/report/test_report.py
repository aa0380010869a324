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
