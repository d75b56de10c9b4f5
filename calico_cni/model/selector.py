"""Calico's label selector language, as used by IP pools' `nodeSelector`.

Grammar (Calico's, so a pool's selector means the same here and in Calico): `all()`, `global()`, `has(k)`, `!has(k)`, `k == 'v'`, `k != 'v'`,
`k in {'a','b'}`, `k not in {...}`, `k contains 'x'`, `k starts with 'x'`, `k ends with 'x'`,
`&&`, `||`, `!`, parentheses; strings in single or double quotes. An empty selector matches
everything. As in Calico, `!=` and `not in` also match when the label is absent.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'[^']*'|"[^"]*")
      | (?P<op>&&|\|\||==|!=|[!(){},])
      | (?P<word>[A-Za-z0-9_./\-]+)
    )""",
    re.VERBOSE,
)


class SelectorError(ValueError):
    """A selector that does not parse."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise SelectorError(f"unexpected character {text[bad]!r} at position {bad}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        tokens.append((kind, value[1:-1] if kind == "str" else value))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            want = value or {"str": "a quoted string", "word": "a label key"}.get(kind or "", "a token")
            got = "the end" if tok is None else repr(tok[1])
            raise SelectorError(f"expected {want} but found {got}")
        self.i += 1
        return tok[1]

    def accept(self, value: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] in ("op", "word") and tok[1] == value:
            self.i += 1
            return True
        return False

    def parse(self) -> Matcher:
        if not self.tokens:
            return lambda labels: True
        matcher = self.parse_or()
        if self.peek() is not None:
            raise SelectorError(f"unexpected {self.peek()[1]!r} after a complete expression")
        return matcher

    def parse_or(self) -> Matcher:
        terms = [self.parse_and()]
        while self.accept("||"):
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else (lambda labels: any(t(labels) for t in terms))

    def parse_and(self) -> Matcher:
        terms = [self.parse_unary()]
        while self.accept("&&"):
            terms.append(self.parse_unary())
        return terms[0] if len(terms) == 1 else (lambda labels: all(t(labels) for t in terms))

    def parse_unary(self) -> Matcher:
        if self.accept("!"):
            inner = self.parse_unary()
            return lambda labels: not inner(labels)
        if self.accept("("):
            inner = self.parse_or()
            self.take("op", ")")
            return inner
        return self.parse_term()

    def parse_set(self) -> frozenset[str]:
        self.take("op", "{")
        values = []
        if not self.accept("}"):
            values.append(self.take("str"))
            while self.accept(","):
                values.append(self.take("str"))
            self.take("op", "}")
        return frozenset(values)

    def parse_term(self) -> Matcher:
        word = self.take("word")
        if word in ("all", "global") and self.peek() == ("op", "("):
            self.take("op", "(")
            self.take("op", ")")
            return lambda labels: True
        if word == "has" and self.peek() == ("op", "("):
            self.take("op", "(")
            key = self.take("word")
            self.take("op", ")")
            return lambda labels: key in labels
        key = word
        if self.accept("=="):
            v = self.take("str")
            return lambda labels: labels.get(key) == v
        if self.accept("!="):
            v = self.take("str")
            return lambda labels: labels.get(key) != v
        if self.accept("in"):
            values = self.parse_set()
            return lambda labels: key in labels and labels[key] in values
        if self.accept("not"):
            self.take("word", "in")
            values = self.parse_set()
            return lambda labels: labels.get(key) not in values
        if self.accept("contains"):
            v = self.take("str")
            return lambda labels: v in labels.get(key, "") if key in labels else False
        if self.accept("starts"):
            self.take("word", "with")
            v = self.take("str")
            return lambda labels: key in labels and labels[key].startswith(v)
        if self.accept("ends"):
            self.take("word", "with")
            v = self.take("str")
            return lambda labels: key in labels and labels[key].endswith(v)
        tok = self.peek()
        raise SelectorError(f"expected an operator after {key!r} but found {'the end' if tok is None else repr(tok[1])}")


def parse(text: str) -> Matcher:
    """Compile a selector; raises SelectorError with the reason when it does not parse."""
    try:
        return _Parser(text or "").parse()
    except SelectorError as exc:
        raise SelectorError(f"invalid selector {text!r}: {exc}") from None


def matches(text: str, labels: Labels) -> bool:
    """True when the selector matches the labels (raises SelectorError if it does not parse)."""
    return parse(text)(labels)
