"""schemathesis against istiod's own OpenAPI document: no 5xx, no response that breaks the schema."""

from __future__ import annotations

import subprocess

import pytest

from tests import harness

pytestmark = pytest.mark.integration

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_schemathesis_finds_no_server_error_or_schema_violation(istiod: harness.Istiod, tmp_path) -> None:
    """Every group-version document listed by /openapi/v3 (what kubectl reads), fuzzed in turn."""
    with istiod.client() as client:
        index = client.get("/openapi/v3").json()["paths"]
        documents = {key: client.get(entry["serverRelativeURL"]).content for key, entry in index.items()}
    assert set(documents) >= {
        "api/v1",
        "apis/security.istio.io/v1",
        "apis/networking.istio.io/v1",
        "apis/gateway.networking.k8s.io/v1",
    }
    for key, document in documents.items():
        schema = tmp_path / (key.replace("/", "_") + ".json")
        schema.write_bytes(document)
        command = [
            str(harness.VENV_BIN / "schemathesis"),
            "run",
            str(schema),
            "--url",
            istiod.url,
            "--header",
            f"Authorization: Bearer {istiod.token}",
            "--tls-verify",
            str(istiod.ca_file),
            "--checks",
            CHECKS,
            "--phases",
            "examples,fuzzing",
            "--max-examples",
            "5",
            "--seed",
            "20261126",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        summary = result.stdout[-6000:]
        assert result.returncode == 0, f"{key}:\n{summary}"
        assert "passed" in summary and "Server error" not in summary, f"{key}:\n{summary}"
