from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from app.cli import run
from app.config_reference import END, START, render_reference, replace_block
from tests.unit.test_cli import Recorder

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


def test_the_bounds_a_value_must_keep_are_said() -> None:
    # A value outside them stops the start: the reference says so up front.
    class Limits(BaseModel):
        size: int = Field(default=8, ge=4, le=64, description="bytes")
        wait: float = Field(default=1.0, gt=0, description="seconds")
        name: str = Field(default="x", description="free text")

    reference = render_reference(Limits)
    assert "| `size` | `REGISTRY_AUTH_SIZE` | `8` | bytes; at least 4, at most 64 |" in reference
    assert "| `wait` | `REGISTRY_AUTH_WAIT` | `1.0` | seconds; more than 0 |" in reference
    assert "| `name` | `REGISTRY_AUTH_NAME` | `x` | free text |" in reference


def test_lengths_choices_and_an_empty_default_are_said() -> None:
    """`etcd.api` never said `v3` was allowed, a jwt backend's `algorithms` not which, a name's
    length limit was unsaid, and an empty default rendered as an empty code span."""

    class Chosen(BaseModel):
        api: Literal["v2", "v3"] = Field(default="v2", description="the API")
        kinds: list[Literal["a", "b"]] = Field(default=["a"], min_length=1, description="kinds")
        said: Literal["x", "y"] = Field(default="x", description="`x` or `y`")
        name: str = Field(default="n", min_length=1, max_length=64, description="a name")
        tags: dict[str, str] = Field(default={"k": "v"}, max_length=3, description="tags")
        prefix: str = Field(default="", description="put first")

    reference = render_reference(Chosen)
    assert "| the API; one of `v2`, `v3` |" in reference
    assert "| kinds; one of `a`, `b`; not empty |" in reference
    assert "| `x` | `x` or `y` |" in reference  # named by the description already
    assert "| a name; not empty, at most 64 characters |" in reference
    assert "| tags; at most 3 entries |" in reference
    assert '| `""` (empty) | put first |' in reference


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


def test_every_backend_type_lists_its_own_settings() -> None:
    reference = render_reference()
    assert "| `auth_backends[].type` | — | required |" in reference
    assert "| `auth_backends[].name` | — | none |" in reference  # shared: one row
    assert "| `auth_backends[].(ldap) group_attribute` | — | `memberOf` |" in reference
    assert "| `auth_backends[].(webhook) secret_env` | — | none |" in reference
    assert "| `auth_backends[].(robots) path` | — | `robots.yaml` |" in reference


def test_a_list_of_tagged_models_renders_shared_then_own_keys() -> None:
    class Cat(BaseModel):
        kind: Literal["cat"]
        name: str = Field(default="tom", description="what it answers to")
        lives: int = Field(default=9, description="how many")

    class Dog(BaseModel):
        kind: Literal["dog"]
        name: str = Field(default="tom", description="what it answers to")

    class Home(BaseModel):
        pets: list[Annotated[Cat | Dog, Field(discriminator="kind")]] | None = Field(
            default=None, description="who lives here"
        )

    assert render_reference(Home).splitlines()[3:7] == [
        "| `pets[].kind` | — | required | the kind of entry: `cat`, `dog`; its own keys follow |",
        "| `pets[].name` | — | `tom` | what it answers to |",
        "| `pets[].(cat) lives` | — | `9` | how many |",
        "",
    ]


def test_the_reference_says_how_the_environment_takes_lists_null_and_empty_paths() -> None:
    reference = render_reference()
    assert "a list or a section takes JSON" in reference
    assert "`REGISTRY_AUTH_AUDIT_LOG=null`" in reference
    assert "An empty path" in reference


def test_replace_block_keeps_the_rest() -> None:
    document = f"before\n{START}\nold\n{END}\nafter\n"
    assert replace_block(document, "new\n") == f"before\n{START}\nnew\n{END}\nafter\n"


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("missing.md", "No such file or directory"),
        (".", "Is a directory"),
        ("plain.md", "no config-reference markers"),
        ("binary.md", "not UTF-8 text"),
    ],
)
def test_update_of_an_unusable_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, problem: str
) -> None:
    (tmp_path / "plain.md").write_text("# no markers here\n")
    (tmp_path / "binary.md").write_bytes(b"\xff\xfe\x00")
    path = tmp_path / target
    assert run(["config-reference", "--update", str(path)], serve=Recorder()) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"registry-auth: error: --update {path}: {problem}")
    assert err.count("\n") == 1


def test_update_refuses_a_fifo_instead_of_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "README.md"
    os.mkfifo(fifo)  # reading it would wait for a writer for ever
    assert run(["config-reference", "--update", str(fifo)], serve=Recorder()) == 2
    assert capsys.readouterr().err == (
        f"registry-auth: error: --update {fifo} is a FIFO, not a regular file\n"
    )
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_update_keeps_the_file_mode_and_replaces_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text(f"intro\n{START}\nstale-block\n{END}\n")
    path.chmod(0o640)
    before = path.stat().st_ino
    assert run(["config-reference", "--update", str(path)], serve=Recorder()) == 0
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != before  # a new file renamed over the old one
    assert path.read_text().startswith(f"intro\n{START}\n")
    assert "stale-block" not in path.read_text()
