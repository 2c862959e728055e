"""One config tree, checked once: StepConfig is made from DreamConfig's step
fields, and a request's objective text is parsed once however many steps read it."""
import dataclasses
import json

import numpy as np
from absl import flags as absl_flags
from PIL import Image

from dream_jax import api, objectives, render
from dream_jax import flags as generated
from dream_jax.engine import deepdream
from dream_jax.engine.config import DreamConfig, StepConfig
from dream_jax.vis import visualize
from tests.conftest import smooth_photo

LAYER = "inception_3a/output"


def test_step_config_is_dream_configs_step_fields_and_a_horizon():
    step_fields = [f.name for f in dataclasses.fields(DreamConfig) if f.metadata["step"]]
    assert [f.name for f in dataclasses.fields(StepConfig)] == step_fields + ["schedule_steps"]
    config = DreamConfig(step_size=0.5, jitter=3, optimizer="adam", schedule="cosine",
                         iter_n=7, kernels="native")
    step = StepConfig.of(config)
    assert {name: getattr(step, name) for name in step_fields} == {
        name: getattr(config, name) for name in step_fields}
    assert step.schedule_steps == 7
    assert StepConfig.of(DreamConfig(kernels="auto")).kernels in ("custom", "native")
    assert StepConfig.of(config.replace(octave_n=2)) == step  # octaves do not recompile
    assert deepdream.StepConfig is StepConfig


def _count_parses(monkeypatch) -> list:
    calls = []
    parse = objectives.parse

    def counting(text):
        calls.append(text)
        return parse(text)
    monkeypatch.setattr(objectives, "parse", counting)
    return calls


def test_a_rendered_request_parses_each_objective_once(tmp_path, monkeypatch):
    Image.fromarray(smooth_photo(0, (48, 64))).save(tmp_path / "in.png")
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(tmp_path / "m.png")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "manifest.json").write_text(json.dumps({"sha256": "0" * 64}))
    monkeypatch.setattr(api, "dream_pixels", lambda params, images, *a, **k: np.asarray(images))
    calls = _count_parses(monkeypatch)
    second = f"channel({LAYER},7)"
    request = render.DreamRequest(input=str(tmp_path / "in.png"), objective=LAYER,
                                  config=DreamConfig(octave_n=1, iter_n=1),
                                  mask=str(tmp_path / "m.png"),
                                  regions=((str(tmp_path / "m.png"), second),))
    render.render(request, tmp_path / "o.png", params={}, weights_dir=tmp_path / "w",
                  progress=False)
    assert sorted(calls) == sorted([LAYER, second])


def test_visualisation_settings_parse_their_extra_terms_once(monkeypatch):
    calls = _count_parses(monkeypatch)
    settings = visualize.Settings(layer=LAYER, size=64, objective_extra="-0.05*tv()")
    for channel in range(3):
        settings.objective(channel)
    assert calls == ["-0.05*tv()"]


def test_the_visualisers_flags_are_generated_from_its_settings():
    values = absl_flags.FlagValues()
    holders = generated.define_fields(visualize.Settings, values)
    assert set(holders) == {f.name for f in dataclasses.fields(visualize.Settings)}
    values(["visualize", "--size=64", "--param=fft", "--nopre_relu", "--learning_rate=0.1"])
    settings = visualize.Settings(**{name: h.value for name, h in holders.items()})
    assert settings == visualize.Settings(size=64, param="fft", pre_relu=False,
                                          learning_rate=0.1)
    assert "enum" in values["param"].flag_type()


def test_the_dream_flags_keep_their_names():
    holders = generated.define_fields(DreamConfig, absl_flags.FlagValues())
    assert {name: h.name for name, h in holders.items()} == {
        f.name: f.metadata["flag"] for f in dataclasses.fields(DreamConfig)}
    assert holders["octave_n"].name == "octaves" and holders["iter_n"].name == "steps"
