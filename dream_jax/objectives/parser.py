"""The objective text form: terms joined by `+`/`-`, each optionally `NUMBER *`.

    inception_4c/output + 0.5*channel(inception_4d/3x3_reduce, 139) - 0.1*tv()

A bare LAYER is l2(LAYER); every other term is `name(arguments)`, read by its
registered class (`objectives.grammar()` lists them). One left-to-right pass
over the tokens, linear in the text, which is bounded (MAX_TEXT characters,
MAX_TERMS terms): a crafted PNG record cannot make replay slow.
"""
from __future__ import annotations

import re

from dream_jax.objectives import terms as objective_terms
from dream_jax.objectives.registry import MAX_TERMS, REGISTRY, ObjectiveError, check_layer, number

MAX_TEXT = 100_000  # a whole-layer direction() with every weight in repr is ~30,000

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_TOKEN = re.compile(rf"(?P<num>{_NUMBER})|(?P<call>[a-z_0-9]+)\s*\((?P<args>[^()]*)\)"
                    rf"|(?P<name>[A-Za-z_][A-Za-z0-9_/]*)|(?P<op>[-+*])")
_SPACE = re.compile(r"\s*")


def _quoted(text: str) -> str:
    """repr, shortened: an error names the text, it does not repeat all of it."""
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def _tokens(text: str) -> list[re.Match]:
    tokens, pos = [], 0
    while (pos := _SPACE.match(text, pos).end()) < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ObjectiveError(f"cannot parse objective {_quoted(text)} at "
                                 f"{_quoted(text[pos:])}")
        tokens.append(match)
        pos = match.end()
    return tokens


def _term(token: re.Match, text: str):
    if token["call"] is not None:
        cls = REGISTRY.get(token["call"])
        if cls is None:
            raise ObjectiveError(f"unknown objective function {token['call']!r}; known: "
                                 f"{', '.join(REGISTRY)}")
        args = token["args"]
        return cls.from_text([a.strip() for a in args.split(",")] if args.strip() else [])
    if token["name"] is not None:
        return objective_terms.L2(check_layer(token["name"]))
    raise ObjectiveError(f"objective {_quoted(text)}: unexpected {token.group()!r}")


def parse(text: str) -> tuple[list, list[float]]:
    """Text form -> (terms, weights), unchecked beyond the syntax; raises
    ObjectiveError with a one-line reason."""
    if not isinstance(text, str):
        raise ObjectiveError(f"an objective's text form is a string, not {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ObjectiveError(f"objective text of {len(text):,} characters; at most {MAX_TEXT:,}")
    if not text.strip():
        raise ObjectiveError("empty objective")
    tokens = _tokens(text)
    terms, weights, pending, i = [], [], None, 0  # pending: the operator before the next term
    while i < len(tokens):
        tok = tokens[i]
        if tok["op"] in ("+", "-"):
            if pending is not None:
                raise ObjectiveError(f"objective {_quoted(text)}: two operators in a row")
            pending, i = tok["op"], i + 1
            continue
        if terms and pending is None:
            raise ObjectiveError(f"objective {_quoted(text)}: missing '+' or '-' between terms")
        scale = -1.0 if pending == "-" else 1.0
        if tok["num"] is not None:
            if i + 2 >= len(tokens) or tokens[i + 1]["op"] != "*":
                raise ObjectiveError(f"objective {_quoted(text)}: a number must be followed "
                                     f"by '*' and a term")
            scale *= number(tok["num"], "weight")
            i += 2
            tok = tokens[i]
        terms.append(_term(tok, text))
        if len(terms) > MAX_TERMS:
            raise ObjectiveError(f"an objective has at most {MAX_TERMS} terms")
        weights.append(scale)
        pending, i = None, i + 1
    if not terms or pending is not None:
        raise ObjectiveError(f"objective {_quoted(text)} ends with an operator")
    return terms, weights
