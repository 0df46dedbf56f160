"""Backend URLs: no user-info (a password would be printed wherever the URL is), a host
required; and the redaction applied wherever a URL stored before the rule is printed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nexus_operator.api import Backend, BackendSpec, redact_url
from nexus_operator.operator.invalid_specs import invalid_spec


@pytest.mark.parametrize(
    "url", ["http://user:pw@ollama.llm:11434", "https://sk-abc@api.openai.com/v1", "http://@h"]
)
def test_url_with_user_info_is_refused_naming_the_field_and_the_remedy(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        BackendSpec.model_validate({"type": "ollama", "url": url})
    error = caught.value.errors()[0]
    assert error["loc"] == ("url",)
    assert "must not contain user-info" in error["msg"]
    assert "credentialsSecretRef" in error["msg"]


@pytest.mark.parametrize("url", ["http://", "https://:8080", "http:///v1/models", "http://h\n"])
def test_url_without_a_host_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        BackendSpec.model_validate({"type": "ollama", "url": url})
    error = caught.value.errors()[0]
    assert error["loc"] == ("url",)
    assert "must name a host" in error["msg"]


@pytest.mark.parametrize(
    "url",
    [
        "http://ollama.llm:11434",
        "https://api.openai.com/v1",
        "http://[::1]:8000",
        "http://10.0.0.7",
        "http://h/path@with-at",
        "http://h?q=a@b",
    ],
)
def test_urls_with_a_host_and_no_user_info_are_accepted(url: str) -> None:
    assert BackendSpec.model_validate({"type": "ollama", "url": url}).url == url


def test_redaction_hides_user_info_and_keeps_everything_else() -> None:
    assert redact_url("https://user:hunter2@api.example.com:8443/v1?x=@") == (
        "https://***@api.example.com:8443/v1?x=@"
    )
    assert redact_url("http://ollama.llm:11434/a@b") == "http://ollama.llm:11434/a@b"


def test_a_stored_url_with_user_info_is_reported_invalid_without_the_password() -> None:
    """An object stored before the rule: Ready=False (InvalidSpec) names the field, not the value."""
    body = {
        "metadata": {"name": "old", "namespace": "ns"},
        "spec": {"type": "ollama", "url": "http://admin:hunter2@ollama.llm:11434"},
    }
    with pytest.raises(ValidationError) as caught:
        Backend.model_validate(body)
    record = invalid_spec("Backend", body, error=caught.value)
    assert record.message.startswith("spec.url: `url` must not contain user-info")
    assert "hunter2" not in record.message
