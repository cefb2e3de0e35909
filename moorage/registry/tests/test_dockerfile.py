"""The base images of a Dockerfile: table cases of the frontend's rules, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moorage.registry.dockerfile import (
    BaseImage,
    InvalidDockerfile,
    base_images,
    expand,
    pulled_base_images,
)


def texts(dockerfile: str, build_args: dict[str, str] | None = None) -> list[str | None]:
    """The pulled images as full references; None for scratch and stage references."""
    return [str(b.reference) if b.reference else None for b in base_images(dockerfile, build_args)]


@pytest.mark.parametrize(("dockerfile", "build_args", "expected"), [
    ("FROM busybox", None, ["docker.io/library/busybox:latest"]),
    ("from ghcr.io/acme/base:1.2", None, ["ghcr.io/acme/base:1.2"]),
    ("FROM --platform=linux/amd64 ghcr.io/a/b:1 AS build", None, ["ghcr.io/a/b:1"]),
    ("FROM --platform=$BUILDPLATFORM ghcr.io/a/b:1", None, ["ghcr.io/a/b:1"]),
    ("ARG V=1.0\nFROM ghcr.io/a/b:$V", None, ["ghcr.io/a/b:1.0"]),
    ("ARG V=1.0\nFROM ghcr.io/a/b:${V}", {"V": "2.0"}, ["ghcr.io/a/b:2.0"]),
    ("ARG V\nFROM ghcr.io/a/b:${V:-3.0}", None, ["ghcr.io/a/b:3.0"]),
    ("ARG V\nFROM ghcr.io/a/b:${V:-3.0}", {"V": "4"}, ["ghcr.io/a/b:4"]),
    ("ARG V=\nFROM ghcr.io/a/b${V-:5}", None, ["ghcr.io/a/b:latest"]),
    ("ARG V\nFROM ghcr.io/a/b${V-:5}", None, ["ghcr.io/a/b:5"]),
    ("ARG V=x\nFROM ghcr.io/a/b${V:+:alt}", None, ["ghcr.io/a/b:alt"]),
    ("ARG REG=127.0.0.1:5000 NS=team\nFROM ${REG}/${NS}/app:1", None,
     ["127.0.0.1:5000/team/app:1"]),
    # A build arg that no ARG before FROM declares does not reach FROM (the engine agrees).
    ("FROM ghcr.io/a/b:${V:-1}", {"V": "2"}, ["ghcr.io/a/b:1"]),
    # An ARG inside a stage does not reach the next FROM.
    ("FROM ghcr.io/a/b:1\nARG V=9\nFROM ghcr.io/a/c:${V:-2}", None,
     ["ghcr.io/a/b:1", "ghcr.io/a/c:2"]),
    ("FROM \\\n  ghcr.io/a/b:1 \\\n  AS base", None, ["ghcr.io/a/b:1"]),
    ("FROM ghcr.io/a/\\\n# a comment inside\n\nb:1", None, ["ghcr.io/a/b:1"]),
    ("# escape=`\nFROM ghcr.io/a/b:1 `\n AS x\nRUN echo \\", None, ["ghcr.io/a/b:1"]),
    ("# a comment\n  # indented comment\n\nFROM busybox:1\n", None,
     ["docker.io/library/busybox:1"]),
    ("FROM busybox AS build\nRUN true\nFROM BUILD\nFROM scratch\nFROM Scratch", None,
     ["docker.io/library/busybox:latest", None, None, None]),
    # A later stage's name is still an image when used before the stage exists.
    ("FROM later\nFROM busybox AS later", None,
     ["docker.io/library/later:latest", "docker.io/library/busybox:latest"]),
    ("FROM 'ghcr.io/a/b:1'", None, ["ghcr.io/a/b:1"]),
    ('ARG T=7\nFROM "ghcr.io/a/b:$T"', None, ["ghcr.io/a/b:7"]),
    ("ARG T=7\nFROM ghcr.io/a/b:\\$T", None, None),  # a literal '$' is no valid tag
    ("FROM ghcr.io/a/b@sha256:" + "a" * 64, None, ["ghcr.io/a/b@sha256:" + "a" * 64]),
    ("FROM busybox\r\nRUN true\r\n", None, ["docker.io/library/busybox:latest"]),
])
def test_base_images(dockerfile: str, build_args: dict[str, str] | None,
                     expected: list[str | None] | None) -> None:
    if expected is None:
        with pytest.raises(InvalidDockerfile):
            base_images(dockerfile, build_args)
    else:
        assert texts(dockerfile, build_args) == expected


def test_the_fields_of_each_from() -> None:
    found = base_images("FROM busybox AS Build\nFROM build AS two\nFROM scratch\n")
    assert [(b.stage_index, b.stage_name, b.from_stage, b.is_scratch, b.line, b.text)
            for b in found] == [(0, "build", None, False, 1, "busybox"),
                                (1, "two", "build", False, 2, "build"),
                                (2, None, None, True, 3, "scratch")]
    assert all(isinstance(b, BaseImage) for b in found)


def test_pulled_base_images_are_distinct_and_in_order() -> None:
    found = base_images("FROM b:1 AS x\nFROM a:1\nFROM x\nFROM b:1\nFROM scratch")
    assert [str(r) for r in pulled_base_images(found)] == [
        "docker.io/library/b:1", "docker.io/library/a:1"]


@pytest.mark.parametrize(("dockerfile", "message"), [
    ("", "The Dockerfile has no FROM instruction."),
    ("# only a comment\nARG A=1\n", "The Dockerfile has no FROM instruction."),
    ("RUN true\nFROM busybox", "Line 1: RUN comes before the first FROM; only ARG may."),
    ("FROM", "Line 1: FROM takes an image and an optional 'AS name'."),
    ("FROM a b", "Line 1: FROM takes an image and an optional 'AS name'."),
    ("FROM a AS", "Line 1: FROM takes an image and an optional 'AS name'."),
    ("FROM a AS 9x", "Line 1: '9x' is not a valid stage name."),
    ("FROM --pull=always a", "Line 1: FROM does not take the flag '--pull=always'."),
    ("ARG V\nFROM $V", "Line 2: FROM $V leaves no image name (is a build arg missing?)."),
    ("FROM ${V", "Line 1: missing '}' in '${V'."),
    ("FROM ${V:?x}", "Line 1: unsupported modifier in '${V:?x}'."),
    ("FROM ${}", "Line 1: bad substitution in '${}'."),
    ("ARG 1A=2\nFROM a", "Line 1: ARG '1A=2' has no valid name."),
    ("# escape=x\nFROM a", "Line 1: invalid escape character 'x'; use \\ or `."),
])
def test_what_cannot_be_worked_out_is_refused_with_the_line(dockerfile: str,
                                                            message: str) -> None:
    with pytest.raises(InvalidDockerfile) as raised:
        base_images(dockerfile)
    assert raised.value.message == message


def test_an_invalid_image_name_names_the_line() -> None:
    with pytest.raises(InvalidDockerfile) as raised:
        base_images("ARG N=Upper\nFROM ghcr.io/$N/app")
    assert raised.value.line == 2
    assert raised.value.message.startswith("Line 2: FROM ghcr.io/Upper/app: ")


# -- properties ------------------------------------------------------------------------------

_component = st.from_regex(r"\A[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,4})?\Z")
_tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}\Z")
_host = st.one_of(st.just(""), st.sampled_from(["ghcr.io/", "127.0.0.1:5000/",
                                                "registry.example.com/", "localhost:8080/"]))


@st.composite
def images(draw: st.DrawFn) -> str:
    path = "/".join(draw(st.lists(_component, min_size=1, max_size=3)))
    return f"{draw(_host)}{path}:{draw(_tag)}"


@given(image=images(), via_arg=st.booleans(), override=st.booleans(), comment=st.booleans(),
       continued=st.booleans(), stage=st.booleans())
def test_any_spelling_of_a_from_finds_the_same_image(
    image: str, via_arg: bool, override: bool, comment: bool, continued: bool, stage: bool
) -> None:
    name, _, tag = image.rpartition(":")
    lines = ["# syntax=docker/dockerfile:1"] if comment else []
    args: dict[str, str] = {}
    if via_arg:
        lines.append(f"ARG IMAGE_TAG={'default' if override else tag}")
        if override:
            args["IMAGE_TAG"] = tag
        written = f"{name}:${{IMAGE_TAG}}"
    else:
        written = image
    if continued:
        lines.append(f"FROM --platform=linux/amd64 \\\n  {written} \\\n  AS base")
    else:
        lines.append(f"FROM {written} AS base")
    if stage:
        lines.append("RUN true\nFROM base")
    found = base_images("\n".join(lines) + "\n", args)
    assert found[0].text == image
    assert found[0].reference is not None and found[0].reference.name.endswith(name)
    assert [str(r) for r in pulled_base_images(found)] == [str(found[0].reference)]
    if stage:
        assert found[1].from_stage == "base" and found[1].reference is None


@given(st.text(max_size=200), st.dictionaries(st.from_regex(r"\A[A-Z]{1,3}\Z"),
                                              st.text(max_size=10), max_size=3))
def test_any_text_parses_or_is_refused_cleanly(text: str, args: dict[str, str]) -> None:
    try:
        found = base_images(text, args)
    except InvalidDockerfile as exc:
        assert exc.message
    else:
        assert found and all(b.reference or b.is_scratch or b.from_stage for b in found)


@given(name=st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,5}\Z"), value=st.text(
    alphabet=st.characters(exclude_characters="$\\'\"{}", exclude_categories=["Cs"]),
    max_size=10))
def test_every_variable_form_substitutes_the_value(name: str, value: str) -> None:
    env: dict[str, str | None] = {name: value}
    for form in (f"${{{name}}}", f"${{{name}:-x}}" if value else f"${{{name}:-}}",
                 f"${{{name}-x}}"):
        assert expand(form, env) == value
    assert expand(f"${{{name}:+alt}}", env) == ("alt" if value else "")
    assert expand(f"${{{name}:-dflt}}", {}) == "dflt"
