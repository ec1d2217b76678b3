"""The soak script runs end to end against a real server: no 5xx, every good answer right."""

from __future__ import annotations

import json

from tests.conftest import make_settings
from tests.soak import soak
from whisper_api import create_app


def test_a_short_soak_has_no_server_errors_and_only_right_answers(engine, model_settings, tmp_path):
    app = create_app(make_settings(model_settings), engine=engine)
    report_path = tmp_path / "soak.json"

    soak.main(["--minutes", str(20 / 60), "--clients", "3", "--sentences", "2", "--json", str(report_path)], app=app)

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["by_kind"]["good"]["statuses"].get("200", 0) > 0, report["by_kind"]
    assert report["errors"].get("5xx", 0) == 0, report["error_examples"]
    assert report["errors"].get("wrong_transcript", 0) == 0, report["error_examples"]
    assert report["errors"].get("connection", 0) == 0, report["error_examples"]
