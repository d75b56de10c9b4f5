"""Calico's selector language for pool node selectors (a selector must mean what it means in Calico): every operator, quoting,
precedence, absent labels, and parse errors."""

from __future__ import annotations

import pytest

from calico_cni.model.selector import SelectorError, matches, parse

ZONE = "topology.kubernetes.io/zone"


def m(text: str, **labels: str) -> bool:
    return matches(text, labels)


def lm(text: str, labels: dict) -> bool:
    return matches(text, labels)


# ------------------------------------------------------------------------------------------------
# Trivial selectors


@pytest.mark.parametrize("text", ["", "   ", "\t\n", None])
def test_empty_selector_matches_everything(text):
    assert matches(text, {}) is True
    assert matches(text, {"a": "b"}) is True


@pytest.mark.parametrize("text", ["all()", " all ( ) ", "global()", "global( )"])
def test_all_and_global_match_everything(text):
    assert m(text)
    assert m(text, a="b", c="d")


# ------------------------------------------------------------------------------------------------
# has / !has


def test_has():
    assert m("has(a)", a="x")
    assert m("has(a)", a="")  # an empty value is still present
    assert not m("has(a)", b="x")
    assert not m("has(a)")
    assert m("has( a )", a="1")


def test_not_has():
    assert not m("!has(a)", a="x")
    assert m("!has(a)", b="x")
    assert m("!has(a)")
    assert m("! has(a)")


# ------------------------------------------------------------------------------------------------
# Comparisons


def test_equals():
    assert m("a == 'x'", a="x")
    assert not m("a == 'x'", a="y")
    assert not m("a == 'x'", a="xx")
    assert not m("a == 'x'", b="x")
    assert not m("a == 'x'")
    assert m("a == ''", a="")
    assert not m("a == ''")  # absent is not the empty value


def test_not_equals_matches_when_absent():
    assert not m("a != 'x'", a="x")
    assert m("a != 'x'", a="y")
    assert m("a != 'x'", b="x")
    assert m("a != 'x'")
    assert m("a != ''")  # absent differs from the empty value
    assert not m("a != ''", a="")


def test_in():
    sel = "a in {'x', 'y'}"
    assert m(sel, a="x") and m(sel, a="y")
    assert not m(sel, a="z")
    assert not m(sel)
    assert not m(sel, a="x, 'y")
    assert m("a in {'x'}", a="x")
    assert not m("a in {}", a="x")
    assert not m("a in {}")
    assert m("a in {''}", a="")
    assert not m("a in {''}")


def test_not_in_matches_when_absent():
    sel = "a not in {'x', 'y'}"
    assert not m(sel, a="x") and not m(sel, a="y")
    assert m(sel, a="z")
    assert m(sel)
    assert m(sel, b="x")
    assert m("a not in {}", a="x")
    assert m("a not in {}")
    assert not m("a not in {''}", a="")
    assert m("a not in {''}")


def test_contains():
    assert m("a contains 'ell'", a="hello")
    assert m("a contains 'hello'", a="hello")
    assert not m("a contains 'xyz'", a="hello")
    assert not m("a contains 'ell'")
    assert m("a contains ''", a="")
    assert not m("a contains ''")  # absent labels contain nothing


def test_starts_with():
    assert m("a starts with 'he'", a="hello")
    assert not m("a starts with 'lo'", a="hello")
    assert not m("a starts with 'he'")
    assert m("a starts with ''", a="anything")
    assert not m("a starts with ''")


def test_ends_with():
    assert m("a ends with 'lo'", a="hello")
    assert not m("a ends with 'he'", a="hello")
    assert not m("a ends with 'lo'")
    assert m("a ends with ''", a="")
    assert not m("a ends with ''")


def test_operators_are_case_sensitive_on_values():
    assert not m("a == 'X'", a="x")
    assert not m("a in {'X'}", a="x")
    assert not m("a contains 'L'", a="hello")


# ------------------------------------------------------------------------------------------------
# Quoting


@pytest.mark.parametrize("quote", ["'", '"'])
def test_single_and_double_quotes(quote):
    q = quote
    assert m(f"a == {q}x{q}", a="x")
    assert m(f"a != {q}x{q}", a="y")
    assert m(f"a in {{{q}x{q}, {q}y{q}}}", a="y")
    assert m(f"a not in {{{q}x{q}}}", a="y")
    assert m(f"a contains {q}b{q}", a="abc")
    assert m(f"a starts with {q}a{q}", a="abc")
    assert m(f"a ends with {q}c{q}", a="abc")


def test_mixed_quotes_in_a_set():
    assert m("""a in {'x', "y"}""", a="y")


def test_quotes_inside_the_other_quotes():
    assert m('''a == "it's"''', a="it's")
    assert m("""a == 'say "hi"'""", a='say "hi"')


def test_operators_inside_quoted_values_are_literal():
    assert m("a == 'x && y || !z'", a="x && y || !z")
    assert m("a == '(b == c)'", a="(b == c)")
    assert m("a in {'x,y', 'z}'}", a="x,y")
    assert m("a in {'x,y', 'z}'}", a="z}")
    assert not m("a in {'x,y', 'z}'}", a="x")
    assert m("a == 'with spaces  inside'", a="with spaces  inside")


# ------------------------------------------------------------------------------------------------
# Keys


@pytest.mark.parametrize(
    "key",
    [ZONE, "kubernetes.io/hostname", "projectcalico.org/orchestrator", "my-label", "my_label", "a.b.c", "A1", "1a", "x/y"],
)
def test_keys_with_dots_slashes_dashes(key):
    labels = {key: "v"}
    assert lm(f"{key} == 'v'", labels)
    assert lm(f"has({key})", labels)
    assert not lm(f"!has({key})", labels)
    assert lm(f"{key} in {{'v'}}", labels)
    assert not lm(f"{key} != 'v'", labels)
    # A key that only shares a prefix does not match.
    assert not lm(f"has({key}x)", labels)


@pytest.mark.parametrize("key", ["in", "not", "has", "all", "global", "contains", "starts", "ends", "with"])
def test_keywords_as_label_keys(key):
    assert lm(f"{key} == 'v'", {key: "v"})
    assert not lm(f"{key} == 'v'", {key: "w"})


def test_whitespace_is_optional_and_flexible():
    assert m("a=='x'&&b!='y'", a="x", b="z")
    assert m("a\t==\n'x'", a="x")
    assert m("  a == 'x'  ", a="x")
    assert m("a in{'x','y'}", a="y")
    assert m("!has(a)&&has(b)", b="1")


# ------------------------------------------------------------------------------------------------
# Boolean operators and precedence


def test_and_or():
    assert m("has(a) && has(b)", a="1", b="1")
    assert not m("has(a) && has(b)", a="1")
    assert m("has(a) || has(b)", b="1")
    assert not m("has(a) || has(b)", c="1")
    assert m("has(a) && has(b) && has(c)", a="1", b="1", c="1")
    assert not m("has(a) && has(b) && has(c)", a="1", b="1")
    assert m("has(a) || has(b) || has(c)", c="1")


def test_and_binds_tighter_than_or():
    sel = "a == 'x' || b == 'y' && c == 'z'"  # a == 'x' || (b == 'y' && c == 'z')
    assert m(sel, a="x")
    assert not m(sel, b="y")  # (a == 'x' || b == 'y') && c == 'z' would also say False, so:
    assert m(sel, a="x", c="nope")  # ... which the wrong grouping would reject
    assert m(sel, b="y", c="z")
    sel2 = "b == 'y' && c == 'z' || a == 'x'"
    assert m(sel2, a="x")
    assert not m(sel2, b="y")


def test_not_binds_to_the_next_term_only():
    sel = "!has(a) && has(b)"  # (!has(a)) && has(b)
    assert m(sel, b="1")
    assert not m(sel, a="1", b="1")
    assert not m(sel, a="1")  # !(has(a) && has(b)) would be True here
    assert not m(sel)
    sel = "!has(a) || has(b)"
    assert m(sel)
    assert m(sel, a="1", b="1")
    assert not m(sel, a="1")
    assert m("!a == 'x'", a="y")  # !(a == 'x')
    assert not m("!a == 'x'", a="x")
    assert m("!a == 'x'")


def test_double_negation():
    assert m("!!has(a)", a="1")
    assert not m("!!has(a)")
    assert m("! ! has(a)", a="1")
    assert not m("!!!has(a)", a="1")


def test_parentheses_override_precedence():
    sel = "(a == 'x' || b == 'y') && c == 'z'"
    assert not m(sel, a="x")
    assert m(sel, a="x", c="z")
    assert m(sel, b="y", c="z")
    assert not m(sel, c="z")


def test_negated_parentheses():
    sel = "!(has(a) && has(b))"
    assert m(sel, a="1")
    assert m(sel)
    assert not m(sel, a="1", b="1")
    sel = "!(a == 'x' || a == 'y')"
    assert not m(sel, a="x") and not m(sel, a="y")
    assert m(sel, a="z") and m(sel)


def test_nested_parentheses():
    sel = "((has(a) || (has(b))) && !(c in {'1', '2'}))"
    assert m(sel, a="1")
    assert m(sel, b="1", c="3")
    assert not m(sel, b="1", c="2")
    assert not m(sel, c="3")
    assert m("(((all())))")


def test_realistic_node_selectors():
    labels = {ZONE: "zone-a", "kubernetes.io/hostname": "node-1", "rack": "r12", "env": "prod"}
    assert lm(f"{ZONE} == 'zone-a' && env in {{'prod', 'staging'}}", labels)
    assert not lm(f"{ZONE} == 'zone-b' || env == 'dev'", labels)
    assert lm("rack starts with 'r1' && !has(gpu)", labels)
    assert lm("kubernetes.io/hostname ends with '-1' || has(gpu)", labels)
    assert not lm("env not in {'prod'} && all()", labels)


def test_compiled_matcher_is_reusable():
    matcher = parse("a in {'x'} && b != 'y' || has(c)")
    assert matcher({"a": "x"})
    assert not matcher({"a": "x", "b": "y"})
    assert matcher({"c": ""})
    assert not matcher({})
    assert matcher({"a": "x"})


# ------------------------------------------------------------------------------------------------
# Parse errors


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("has(", "the end"),
        ("has()", "')'"),
        ("has(a", "expected )"),
        ("a ==", "the end"),
        ("a == b", "'b'"),
        ("a == 1", "'1'"),
        ("a != ", "the end"),
        ("a = 'x'", "'='"),
        ("a === 'x'", "'='"),
        ("a == 'x", "\"'\""),
        ("a & b", "'&'"),
        ("a | b", "'|'"),
        ("$", "'$'"),
        ("a == 'x' @", "'@'"),
        ("(has(a)", "expected )"),
        ("has(a))", "')'"),
        ("has(a) has(b)", "'has'"),
        ("has(a) &&", "the end"),
        ("has(a) ||", "the end"),
        ("&& has(a)", "'&&'"),
        ("|| has(a)", "'||'"),
        ("!", "the end"),
        ("()", "')'"),
        ("a", "expected an operator after 'a'"),
        ("a b", "expected an operator after 'a'"),
        ("a in 'x'", "expected {"),
        ("a in {'x' 'y'}", "expected }"),
        ("a in {'x',}", "'}'"),
        ("a in {x}", "'x'"),
        ("a in {'x'", "expected }"),
        ("a not 'x'", "expected in"),
        ("a not in 'x'", "expected {"),
        ("a starts 'x'", "expected with"),
        ("a ends 'x'", "expected with"),
        ("a starts with x", "'x'"),
        ("a contains", "the end"),
        ("all(x)", "expected )"),
        ("all(", "expected )"),
        ("a == 'x' b == 'y'", "'b'"),
    ],
)
def test_parse_errors_say_what_and_where(text, fragment):
    with pytest.raises(SelectorError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"invalid selector {text!r}: "), message
    assert fragment in message, message
    # matches() refuses too, with the same error.
    with pytest.raises(SelectorError):
        matches(text, {"a": "x"})


def test_selector_error_is_a_value_error():
    assert issubclass(SelectorError, ValueError)


def test_unexpected_character_position():
    with pytest.raises(SelectorError) as info:
        parse("has(a) && $b")
    assert "'$'" in str(info.value)
    assert "position" in str(info.value)


def test_unexpected_character_position_without_whitespace():
    with pytest.raises(SelectorError) as info:
        parse("has(a)&&$b")
    assert "position 8" in str(info.value)


@pytest.mark.parametrize("text", ["has(a) && $b", "a = 'x'", "a == 'x"])
def test_unexpected_character_position_points_at_the_character(text):
    bad = {"has(a) && $b": "$", "a = 'x'": "=", "a == 'x": "'"}[text]
    with pytest.raises(SelectorError) as info:
        parse(text)
    assert f"position {text.index(bad)}" in str(info.value), str(info.value)
