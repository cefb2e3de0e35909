"""The base images of a Dockerfile: what a build pulls, found before the build runs.

A build pulls its base images itself, but only the classic builder reads the build's
credentials (``X-Registry-Config``) and a cached base image would build for a tenant without
access (I8). So the agent pulls every base image first, with the right credential for its
registry host (I4); this module tells it which images those are.

:func:`base_images` follows the Dockerfile frontend's rules for what matters to ``FROM``:

* parser directives at the top (``# escape=`` changes the escape character, ``# syntax=``
  is ignored); comment lines; line continuations (the escape character at the end of a line,
  comment and empty lines inside a continuation are skipped);
* ``ARG`` before the first ``FROM`` declares the only variables ``FROM`` may use: their
  defaults, overridden by the build args. A build arg that no such ``ARG`` declares does
  not reach ``FROM`` (the engine ignores it there too). ``ARG`` inside a stage is ignored;
* ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``,
  ``${VAR+alt}``, quotes and escapes, as the engine's shell-word processing does;
* ``FROM [--platform=…] IMAGE [AS NAME]``: ``--platform`` is ignored (the engine picks the
  platform when it pulls), ``scratch`` is no image, and a name given to an earlier stage
  (compared case-insensitively) refers to that stage, not to a registry.

No Django here: the region agent uses it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from moorage.registry.reference import ImageReference, InvalidReference, parse_reference

__all__ = ["BaseImage", "InvalidDockerfile", "base_images", "pulled_base_images"]

_DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_INSTRUCTION_RE = re.compile(r"^([A-Za-z]+)(?:\s+(.*))?$", re.DOTALL)
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]")
_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")
_SCRATCH = "scratch"


class InvalidDockerfile(ValueError):
    """A Dockerfile whose ``FROM`` lines cannot be worked out; the message says which line
    and why (a Dockerfile holds no secret, so quoting it is fine)."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        """Keep the message and the 1-based line number of the instruction, if known."""
        super().__init__(message)
        self.message = message
        self.line = line


@dataclasses.dataclass(frozen=True)
class BaseImage:
    """One ``FROM`` of a Dockerfile, in order.

    ``text`` is the image as the engine will read it (variables substituted). ``reference``
    is set only for an image the build pulls from a registry: ``None`` for ``scratch``
    (``is_scratch``) and for an earlier stage (``from_stage``, its name in lower case).
    ``stage_index`` counts stages from 0; ``stage_name`` is the ``AS`` name, lower case.
    """

    reference: ImageReference | None
    text: str
    stage_index: int
    is_scratch: bool = False
    from_stage: str | None = None
    stage_name: str | None = None
    line: int = 0


def pulled_base_images(images: list[BaseImage]) -> list[ImageReference]:
    """The distinct registry images among ``images``, in first-use order."""
    seen: list[ImageReference] = []
    for image in images:
        if image.reference is not None and image.reference not in seen:
            seen.append(image.reference)
    return seen


def base_images(
    dockerfile_text: str, build_args: Mapping[str, str] | None = None
) -> list[BaseImage]:
    """Every ``FROM`` of ``dockerfile_text`` with ``build_args`` applied, in order.

    Raises :class:`InvalidDockerfile` for a Dockerfile without ``FROM``, an instruction
    before the first ``FROM`` other than ``ARG``, a malformed ``FROM``, a variable that leaves
    the image empty, or an image name docker would refuse.
    """
    args = dict(build_args or {})
    meta: dict[str, str | None] = {}
    stages: list[str | None] = []
    found: list[BaseImage] = []
    escape, instructions = _instructions(dockerfile_text)
    for line_no, instruction, rest in instructions:
        keyword = instruction.upper()
        if keyword == "ARG" and not stages:
            for name, default in _arg_declarations(rest, line_no):
                meta[name] = args[name] if name in args else default
        elif keyword == "FROM":
            image = _from(rest, line_no, len(stages), meta, stages, escape)
            stages.append(image.stage_name)
            found.append(image)
        elif not stages:
            raise InvalidDockerfile(
                f"Line {line_no}: {keyword} comes before the first FROM; only ARG may.",
                line=line_no)
    if not found:
        raise InvalidDockerfile("The Dockerfile has no FROM instruction.")
    return found


# -- lines -----------------------------------------------------------------------------------


def _instructions(text: str) -> tuple[str, list[tuple[int, str, str]]]:
    """The escape character, and ``(line number, instruction, arguments)`` of every
    instruction after directives, comments and continuations."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    escape = "\\"
    index = 0
    # Parser directives: only at the very top, before any comment, blank line or instruction.
    seen_directives: set[str] = set()
    while index < len(lines):
        match = _DIRECTIVE_RE.match(lines[index].strip())
        if not match or match.group(1).lower() in seen_directives:
            break
        key, value = match.group(1).lower(), match.group(2)
        seen_directives.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise InvalidDockerfile(f"Line {index + 1}: invalid escape character {value!r}; "
                                        "use \\ or `.", line=index + 1)
            escape = value
        index += 1
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    result: list[tuple[int, str, str]] = []
    while index < len(lines):
        start = index
        line = lines[index].lstrip()
        index += 1
        if not line or line.startswith("#"):
            continue
        parts: list[str] = []
        while True:
            match = continuation.search(line)
            if match is None:
                parts.append(line)
                break
            parts.append(line[: match.start()])
            # Continue with the next line that is neither empty nor a comment.
            line = ""
            while index < len(lines):
                candidate = lines[index]
                index += 1
                stripped = candidate.lstrip()
                if not stripped or stripped.startswith("#"):
                    continue
                line = candidate
                break
            else:
                break
        joined = "".join(parts).strip()
        match = _INSTRUCTION_RE.match(joined)
        if match is None:
            raise InvalidDockerfile(f"Line {start + 1}: cannot read {joined[:60]!r} as an "
                                    "instruction.", line=start + 1)
        result.append((start + 1, match.group(1), (match.group(2) or "").strip()))
    return escape, result


def _arg_declarations(rest: str, line_no: int) -> list[tuple[str, str | None]]:
    """``ARG A`` / ``ARG A=1 B="two words"``: the names and their (unsubstituted) defaults."""
    declared: list[tuple[str, str | None]] = []
    for word in _split_words(rest):
        name, eq, default = word.partition("=")
        if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InvalidDockerfile(f"Line {line_no}: ARG {word!r} has no valid name.",
                                    line=line_no)
        declared.append((name, _unquote(default) if eq else None))
    if not declared:
        raise InvalidDockerfile(f"Line {line_no}: ARG needs a name.", line=line_no)
    return declared


def _split_words(text: str) -> list[str]:
    """Split on whitespace outside quotes (ARG values may be quoted)."""
    words: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            current.append(ch)
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


# -- FROM ------------------------------------------------------------------------------------


def _from(
    rest: str, line_no: int, index: int, meta: Mapping[str, str | None],
    stages: list[str | None], escape: str,
) -> BaseImage:
    words = rest.split()
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        name = flag[2:].partition("=")[0].lower()
        if name != "platform":
            raise InvalidDockerfile(f"Line {line_no}: FROM does not take the flag {flag!r}.",
                                    line=line_no)
    stage_name: str | None = None
    if len(words) == 3 and words[1].lower() == "as":
        stage_name = words[2].lower()
        if not _STAGE_NAME_RE.match(stage_name):
            raise InvalidDockerfile(f"Line {line_no}: {words[2]!r} is not a valid stage name.",
                                    line=line_no)
        words = words[:1]
    if len(words) != 1:
        raise InvalidDockerfile(f"Line {line_no}: FROM takes an image and an optional "
                                "'AS name'.", line=line_no)
    text = expand(words[0], meta, line=line_no, escape=escape)
    if not text:
        raise InvalidDockerfile(f"Line {line_no}: FROM {words[0]} leaves no image name "
                                "(is a build arg missing?).", line=line_no)
    found = BaseImage(reference=None, text=text, stage_index=index, stage_name=stage_name,
                      line=line_no)
    if text.lower() in [s for s in stages if s]:
        return dataclasses.replace(found, from_stage=text.lower())
    if text.lower() == _SCRATCH:
        return dataclasses.replace(found, is_scratch=True)
    try:
        reference = parse_reference(text)
    except InvalidReference as exc:
        raise InvalidDockerfile(f"Line {line_no}: FROM {text}: {exc.message}",
                                line=line_no) from None
    return dataclasses.replace(found, reference=reference)


def expand(word: str, env: Mapping[str, str | None], *, line: int = 0,
           escape: str = "\\") -> str:
    """Shell-word processing of one ``FROM`` word: quotes, escapes and variables.

    ``env`` maps declared names to values; ``None`` is declared without a value (unset).
    """
    out: list[str] = []
    i = 0
    n = len(word)
    while i < n:
        ch = word[i]
        if ch == escape:
            if i + 1 < n:
                out.append(word[i + 1])
            i += 2
        elif ch == "'":
            end = word.find("'", i + 1)
            if end < 0:
                raise InvalidDockerfile(f"Line {line}: unmatched ' in {word!r}.", line=line)
            out.append(word[i + 1:end])
            i = end + 1
        elif ch == '"':
            i += 1
            while i < n and word[i] != '"':
                if word[i] == escape and i + 1 < n and word[i + 1] in ('"', "$", escape):
                    out.append(word[i + 1])
                    i += 2
                elif word[i] == "$":
                    value, i = _variable(word, i, env, line, escape)
                    out.append(value)
                else:
                    out.append(word[i])
                    i += 1
            if i >= n:
                raise InvalidDockerfile(f'Line {line}: unmatched " in {word!r}.', line=line)
            i += 1
        elif ch == "$":
            value, i = _variable(word, i, env, line, escape)
            out.append(value)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _variable(
    word: str, i: int, env: Mapping[str, str | None], line: int, escape: str
) -> tuple[str, int]:
    """Expand the variable at ``word[i] == '$'``; return its value and the next index."""
    n = len(word)
    if i + 1 < n and word[i + 1] == "{":
        j = i + 2
        start = j
        while j < n and _NAME_CHARS.match(word[j]):
            j += 1
        name = word[start:j]
        if not name:
            raise InvalidDockerfile(f"Line {line}: bad substitution in {word!r}.", line=line)
        if j >= n:
            raise InvalidDockerfile(f"Line {line}: missing '}}' in {word!r}.", line=line)
        if word[j] == "}":
            return env.get(name) or "", j + 1
        operator = word[j]
        if operator == ":" and j + 1 < n and word[j + 1] in "-+":
            operator = word[j:j + 2]
            j += 2
        elif operator in "-+":
            j += 1
        else:
            raise InvalidDockerfile(f"Line {line}: unsupported modifier in {word!r}.",
                                    line=line)
        end = _closing_brace(word, j, line)
        inner = expand(word[j:end], env, line=line, escape=escape)
        value = env.get(name)
        if operator == ":-":
            result = value if value else inner
        elif operator == "-":
            result = value if value is not None else inner
        elif operator == ":+":
            result = inner if value else ""
        else:
            result = inner if value is not None else ""
        return result, end + 1
    j = i + 1
    while j < n and _NAME_CHARS.match(word[j]):
        j += 1
    if j == i + 1:
        return "$", j  # a lone '$' is literal
    return env.get(word[i + 1:j]) or "", j


def _closing_brace(word: str, start: int, line: int) -> int:
    depth = 0
    i = start
    while i < len(word):
        if word[i] == "$" and i + 1 < len(word) and word[i + 1] == "{":
            depth += 1
            i += 2
            continue
        if word[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise InvalidDockerfile(f"Line {line}: missing '}}' in {word!r}.", line=line)
