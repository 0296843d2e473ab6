"""The one config system: the strict base, the YAML + ``key=value`` loader and its errors, and
every config family (data, fine-tuning, pretraining, eval settings / suites, custom eval tasks,
model shapes) going through it."""

from __future__ import annotations

import pydantic
import pytest
import yaml
from typer.testing import CliRunner

from geolatent.cli import app
from geolatent.config import (
    ConfigError,
    StrictModel,
    load_config,
    parse_overrides,
    read_yaml_mapping,
)


class Inner(StrictModel):
    lr: float = 1e-3
    lrs: list[float] = [1e-4]


class Outer(StrictModel):
    name: str = "x"
    steps: int = 10
    inner: Inner = Inner()


def test_overrides_are_typed_yaml_values_merged_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner: {lr: 0.5}\n")
    cfg = load_config(path, Outer, ["steps=7", "inner.lrs=[1e-2, 2e-2]", "name=null-ish"])
    assert cfg.steps == 7 and isinstance(cfg.steps, int)
    assert cfg.inner.lr == 0.5  # untouched keys of an overridden section stay from the file
    assert cfg.inner.lrs == [1e-2, 2e-2]
    assert cfg.name == "null-ish"
    assert parse_overrides(["a.b=3", "a.c=true", "d="]) == {"a": {"b": 3, "c": True}, "d": None}
    # a mapping and None are sources too
    assert load_config({"steps": 3}, Outer, ["inner.lr=1"]).inner.lr == 1.0
    assert load_config(None, Outer) == Outer()


def test_errors_name_the_file_and_every_bad_key_path(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: many\ninner: {learning_rate: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, Outer, what="demo")
    text = str(err.value)
    assert text.startswith(f"invalid demo config {path}:")
    assert "  steps: Input should be a valid integer" in text
    assert "  inner.learning_rate: unknown key" in text
    with pytest.raises(ConfigError, match=r"--set 'steps' is not of the form key=value"):
        load_config(None, Outer, ["steps"], flag="--set")
    with pytest.raises(ConfigError, match=r"--set 'a\.\.b=1' is not of the form"):
        load_config(None, Outer, ["a..b=1"], flag="--set")
    with pytest.raises(ConfigError, match="conflicts with another override"):
        parse_overrides(["a=1", "a.b=2"])
    with pytest.raises(ConfigError, match="value is not valid YAML"):
        parse_overrides(["a=[1"])


def _file_readers() -> dict[str, object]:
    from geolatent.data.config import load_data_config
    from geolatent.evals.datasets.custom import load_custom_task
    from geolatent.platform.config import load_finetune_config
    from geolatent.pretrain.config import load_config as load_pretrain_config

    return {"read_yaml_mapping": read_yaml_mapping, "data": load_data_config,
            "finetune": load_finetune_config, "pretrain": load_pretrain_config,
            "custom_task": load_custom_task}  # fmt: skip


@pytest.mark.parametrize("reader", list(_file_readers()))
def test_every_config_file_reader_names_the_file_in_its_errors(tmp_path, reader):
    read = _file_readers()[reader]
    bad = tmp_path / "bad.yaml"
    for text, message in (("a: [unclosed", "bad.yaml: invalid YAML"),
                          ("- a\n- list\n", "bad.yaml: expected a mapping at the top level, got")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read(tmp_path / "absent.yaml")


def test_an_empty_yaml_file_is_an_empty_mapping(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty) == {}


def test_strict_base_checks_assignments_too():
    cfg = Outer()
    with pytest.raises(pydantic.ValidationError):
        cfg.steps = "many"  # type: ignore[assignment]
    with pytest.raises(pydantic.ValidationError):
        Outer(extra_key=1)  # type: ignore[call-arg]


def _config_models() -> list[type]:
    from geolatent.data import config as data_config
    from geolatent.evals import settings as eval_settings
    from geolatent.evals.datasets.custom import CustomTaskConfig
    from geolatent.model.config import ModelConfig, PoolerConfig
    from geolatent.platform import config as platform_config
    from geolatent.pretrain.config import PretrainConfig

    found = {PretrainConfig, ModelConfig, PoolerConfig, CustomTaskConfig}
    for mod in (data_config, platform_config, eval_settings):
        found |= {v for v in vars(mod).values()
                  if isinstance(v, type) and issubclass(v, pydantic.BaseModel)}  # fmt: skip
    return sorted(found, key=lambda c: c.__name__)


def test_every_config_family_derives_from_the_one_strict_base():
    models = _config_models()
    assert len(models) > 20
    for cls in models:
        assert issubclass(cls, StrictModel), cls
        if cls.__name__ != "SourcesFile":  # predict --sources reads `sources:` of any config
            assert cls.model_config.get("extra") == "forbid", cls


def test_one_public_finetune_config_name():
    import geolatent.evals as evals
    import geolatent.platform as platform

    assert not hasattr(evals, "FinetuneConfig")
    assert platform.FinetuneConfig.__module__ == "geolatent.platform.config"
    assert evals.FinetuneProbeConfig.__module__ == "geolatent.evals.protocols.finetune"


def test_model_sizes_come_from_the_one_table():
    from geolatent.model.config import SIZES
    from geolatent.model.versions import SIZE_TABLE
    from geolatent.pretrain.config import ConfigError as PretrainConfigError
    from geolatent.pretrain.config import config_from_dict

    assert PretrainConfigError is ConfigError
    assert list(SIZES) == list(SIZE_TABLE)
    with pytest.raises(ConfigError, match="model.size: unknown model size 'huge'"):
        config_from_dict({"data": {"builtin": {}}, "model": {"size": "huge"}})


def test_eval_settings_and_suites_are_validated(tmp_path):
    from geolatent.evals.settings import EvalSettings, load_suite

    s = EvalSettings.from_dict({"linear": {"epochs": 5}}, ["knn.k=3", "label_fractions=[0.5]"])
    assert (s.linear.epochs, s.knn.k, s.label_fractions) == (5, 3, (0.5,))
    with pytest.raises(ConfigError, match=r"linear\.epoch: unknown key"):
        EvalSettings.from_dict({"linear": {"epoch": 5}})
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "s", "seeds": 2, "tasks": ["tiny"],
                                     "models": {"m": {"random_init": "nano"}}}))  # fmt: skip
    cfg, base = load_suite(suite)
    assert base == tmp_path and cfg.effective_settings().seeds == 2
    assert cfg.task_entries()[0].name == "tiny"
    suite.write_text(yaml.safe_dump({"name": "s", "task": ["tiny"]}))
    with pytest.raises(ConfigError, match=r"invalid eval suite config .*suite.yaml:\n  task: "):
        load_suite(suite)


def test_eval_cli_reports_bad_set_and_suite_keys_as_usage_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--task", "x", "--random-init", "nano",
                            "--set", "linear.epoch=5"], env={"COLUMNS": "400"})  # fmt: skip
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "linear.epoch: unknown key" in out
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nprotocol: [knn]\n")
    r = runner.invoke(app, ["eval", "--suite", str(suite)], env={"COLUMNS": "400"})
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "--suite" in out and "protocol: unknown key" in out


def test_custom_task_yaml_is_strict(tmp_path):
    from geolatent.evals import load_custom_task

    spec = tmp_path / "task.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "task_type": "classification",
                                    "arrays": "a.npz", "chip": {}}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"task.yaml:\n  chip: unknown key"):
        load_custom_task(spec)
    spec.write_text(yaml.safe_dump({"name": "t", "task_type": "classification"}))
    with pytest.raises(ConfigError, match="give exactly one of `arrays:` or `chips:`"):
        load_custom_task(spec)


def test_data_and_finetune_loaders_name_the_file_and_key(tmp_path):
    from geolatent.data import load_data_config
    from geolatent.platform import load_finetune_config

    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"output_dir": "o", "year": 2020, "tile_sise": 256,
                                    "area": {"bbox": [0, 0, 1, 1]}, "sources": []}))  # fmt: skip
    with pytest.raises(ConfigError,
                       match=r"invalid data config .*data.yaml:\n  tile_sise: unknown"):
        load_data_config(data)
    ft = tmp_path / "ft.yaml"
    ft.write_text("labelz: {}\n")
    with pytest.raises(ConfigError,
                       match=r"invalid fine-tuning config .*ft.yaml:(\n.*)*labelz: unknown"):
        load_finetune_config(ft)


def test_data_build_and_finetune_take_set_overrides(tmp_path):
    from geolatent.data import load_data_config

    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"output_dir": "o", "year": 2020,
                                    "area": {"bbox": [0, 0, 1, 1]}, "sources": []}))  # fmt: skip
    cfg = load_data_config(data, ["tile_size=512", "output_dir=built"])
    assert cfg.tile_size == 512
    assert cfg.output_dir == str(tmp_path / "built")  # relative to the file, as in the file
    runner = CliRunner()
    r = runner.invoke(app, ["data", "build", "--config", str(data), "--set", "tile_sise=512"],
                      env={"COLUMNS": "400"})  # fmt: skip
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "tile_sise: unknown key" in out
    r = runner.invoke(app, ["data", "build", "--config", str(data), "--set", "tile_size"],
                      env={"COLUMNS": "400"})  # fmt: skip
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "--set 'tile_size' is not of the form key=value" in out
    ft = tmp_path / "ft.yaml"
    ft.write_text("{}\n")
    r = runner.invoke(app, ["finetune", "--config", str(ft), "--set", "train.lr=-1"],
                      env={"COLUMNS": "400"})  # fmt: skip
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "invalid fine-tuning config" in out and "train.lr: Input should be greater than" in out


def test_predict_sources_file_reads_the_sources_of_any_config(tmp_path):
    from geolatent.platform.cli import _read_sources

    data = tmp_path / "data.yaml"
    src = {"type": "files", "name": "my_s2", "modality": "sentinel2_l2a", "paths": ["s2/*.tif"],
           "bands": ["B02"], "date_pattern": r"(\d{8})"}  # fmt: skip
    data.write_text(yaml.safe_dump({"output_dir": "o", "year": 2020, "sources": [src]}))
    (sources,) = _read_sources(data)  # a whole data config: only `sources:` is read
    assert sources.name == "my_s2" and sources.paths == [str(tmp_path / "s2/*.tif")]
    data.write_text(yaml.safe_dump({"sources": []}))
    with pytest.raises(ConfigError, match=r"invalid --sources config .*data.yaml:\n  sources: "):
        _read_sources(data)
