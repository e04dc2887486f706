from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from app.config_reference import END, START, render_reference, replace_block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_matches_the_settings_model() -> None:
    text = README.read_text(encoding="utf-8")
    assert replace_block(text, render_reference()) == text, (
        "README's configuration reference is stale: run "
        "`.venv/bin/registry-auth config-reference --update README.md`"
    )


def test_every_setting_is_documented_with_its_environment_variable() -> None:
    reference = render_reference()
    assert "| `token_ttl` | `REGISTRY_AUTH_TOKEN_TTL` | `300` |" in reference
    assert "| `issuer` | `REGISTRY_AUTH_ISSUER` | required |" in reference


def test_nested_models_render_as_dotted_keys() -> None:
    class Inner(BaseModel):
        endpoints: list[str] = Field(default=["http://127.0.0.1:2379"], description="where")

    class Outer(BaseModel):
        etcd: Inner | None = Field(default=None, description="etcd")

    reference = render_reference(Outer)
    assert (
        '| `etcd.endpoints` | `REGISTRY_AUTH_ETCD__ENDPOINTS` | `["http://127.0.0.1:2379"]` |'
        in (reference)
    )


def test_replace_block_keeps_the_rest() -> None:
    document = f"before\n{START}\nold\n{END}\nafter\n"
    assert replace_block(document, "new\n") == f"before\n{START}\nnew\n{END}\nafter\n"
