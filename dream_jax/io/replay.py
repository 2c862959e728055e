"""A picture's record, for dreams and visualisations alike: written into the
PNG, read back checked, and checked again before it is replayed.

Every record has one envelope: its format (`record.SCHEMA`), the package
version, the weights' sha256 and the jax build (`build.current()`), around
fields of its kind (a dream's `request`, a visualisation's `visualization`).
Reading checks the whole record against its kind's spec (`record.loads`);
replaying refuses other weights and says in one line when the build differs,
since then the pixels may differ.
"""
from __future__ import annotations

import json
import os

import jax

from dream_jax import __version__
from dream_jax.errors import UserError
from dream_jax.io import build, image_io, record

METADATA_KEY = "dream_jax"


def png_text(weights_sha256: str, **fields) -> dict[str, str]:
    """PNG text chunks holding the record: the envelope plus `fields`."""
    value = {"schema": record.SCHEMA, "version": __version__, "weights_sha256": weights_sha256,
             "backend": jax.default_backend(), "build": build.current(), **fields}
    return {METADATA_KEY: json.dumps(value, sort_keys=True),
            "Software": f"dream_jax {__version__}"}


def spec(required: dict, optional: dict | None = None) -> record.Obj:
    """The schema of a record whose kind has these fields, with the envelope's."""
    return record.Obj({"weights_sha256": record.Sha256(), **required},
                      {"schema": record.Int(1), "version": record.Str(64),
                       "backend": record.Str(64), "build": record.Table(),
                       **(optional or {})})


def text_of(png: str | os.PathLike) -> str | None:
    """The record's raw text in `png`, None when it has none."""
    return image_io.read_png_metadata(png).get(METADATA_KEY)


def read(png: str | os.PathLike, kind: str | None, kind_spec: record.Obj, missing: str
         ) -> dict:
    """The record in `png`, checked against `kind_spec`; `missing` is the error
    when the PNG holds no record, or (with `kind`) none naming a `kind` field."""
    text = text_of(png)
    if text is None or (kind is not None and f'"{kind}"' not in text):
        raise UserError(missing)
    return record.loads(text, kind_spec, str(png))


def check_replayable(recorded: dict, weights_sha256: str, what: str) -> None:
    """Refuse a record made with other weights; warn once if another jax build
    made it. `what` names it in the messages ("the dream", "the picture")."""
    if recorded.get("weights_sha256") != weights_sha256:
        raise UserError(f"cannot replay: {what} was made with different weights "
                        f"(sha256 {recorded.get('weights_sha256')})")
    build.warn_if_other(recorded, what)
