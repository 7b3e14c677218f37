import pytest

from attention import AttentionError
from attention.config import Config, config_hash, load_toml, parse_value, to_dict, with_overrides


def test_overrides_set_nested_fields_and_keep_the_rest():
    config = with_overrides(Config(), {"model.reader.patch_size": 12, "train.learning_rate": 3e-4})
    assert config.model.reader.patch_size == 12 and config.train.learning_rate == 3e-4
    assert config.model.reader.num_scales == Config().model.reader.num_scales


def test_unknown_key_is_refused_with_the_known_ones():
    with pytest.raises(AttentionError, match="unknown config key 'model.reader.patc'.*patch_size"):
        with_overrides(Config(), {"model.reader.patc": 3})
    with pytest.raises(AttentionError, match="unknown config section 'modle'"):
        with_overrides(Config(), {"modle.num_glimpses": 3})


@pytest.mark.parametrize(
    "key,value",
    [
        ("model.num_glimpses", 2.5),
        ("model.num_glimpses", True),
        ("train.learning_rate", "fast"),
        ("model.fc_hidden", 5),
        ("model.routing.reinforce_reaches_core", 1),
    ],
)
def test_wrongly_typed_values_are_refused(key, value):
    with pytest.raises(AttentionError, match=key.split(".")[-1]):
        with_overrides(Config(), {key: value})


def test_set_values_parse_as_toml_with_bare_words_as_strings():
    assert parse_value("12") == 12 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("[64, 64]") == [64, 64] and parse_value("lstm") == "lstm"


def test_toml_file_becomes_dotted_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[model.reader]\npatch_size = 12\n[train]\nepochs = 3\n")
    assert load_toml(path) == {"model.reader.patch_size": 12, "train.epochs": 3}
    path.write_text("[model\n")
    with pytest.raises(AttentionError, match="not valid TOML"):
        load_toml(path)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: None, "does not exist"),
        (lambda path: path.mkdir(), "is a directory"),
        (lambda path: path.write_bytes(b"epochs = '\xff\xfe'\n"), "not valid TOML"),
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_an_unreadable_config_file_is_refused_in_one_line_naming_it(tmp_path, make, says):
    path = tmp_path / "run.toml"
    make(path)
    with pytest.raises(AttentionError, match=says) as refused:
        load_toml(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_hash_is_stable_and_changes_with_any_field_including_the_seed():
    base = with_overrides(Config(), {})
    assert config_hash(base) == config_hash(with_overrides(Config(), to_dict_overrides(base)))
    assert config_hash(base) != config_hash(with_overrides(Config(), {"train.seed": 1}))
    assert config_hash(base) != config_hash(with_overrides(Config(), {"model.where.std": 0.2}))


def to_dict_overrides(config):
    from attention.config import flatten

    return flatten(to_dict(config))


def test_none_means_no_value_only_where_a_field_allows_it():
    config = with_overrides(
        Config(), {"train.grad_clip": parse_value("none"), "model.where.bound": parse_value("none")}
    )
    assert config.train.grad_clip is None and config.model.where.bound == "none"


def test_evaluation_only_settings_are_not_part_of_a_runs_identity():
    base = with_overrides(Config(), {"train.epochs": 3})
    for key, value in [("eval.sampled_repeats", 10), ("train.eval_batch_size", 17)]:
        assert config_hash(with_overrides(base, {key: value})) == config_hash(base), key
    assert config_hash(with_overrides(base, {"train.batch_size": 17})) != config_hash(base)


def test_a_new_field_with_a_default_leaves_existing_identities_unchanged():
    import dataclasses

    from attention.config import TrainConfig

    @dataclasses.dataclass(frozen=True)
    class TrainConfigOfTomorrow(TrainConfig):
        new_knob: float = 0.5

    today = with_overrides(Config(), {"train.epochs": 3, "model.num_glimpses": 4})
    tomorrow = dataclasses.replace(today, train=TrainConfigOfTomorrow(**dataclasses.asdict(today.train)))
    assert config_hash(tomorrow) == config_hash(today)
    changed = dataclasses.replace(tomorrow, train=dataclasses.replace(tomorrow.train, new_knob=0.7))
    assert config_hash(changed) != config_hash(today)


def test_init_from_is_identified_by_the_digest_of_its_weights_not_its_path(tmp_path):
    import shutil

    import torch

    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    first.mkdir()
    torch.save({"w": torch.ones(2)}, first / "model.pt")
    shutil.copytree(first, second)
    other.mkdir()
    torch.save({"w": torch.zeros(2)}, other / "model.pt")

    def identity(source):
        return config_hash(with_overrides(Config(), {"train.init_from": str(source)}))

    assert identity(first) == identity(second) == identity(second / "model.pt")
    assert identity(first) != identity(other)
    with pytest.raises(AttentionError, match="does not exist"):
        identity(tmp_path / "missing")
