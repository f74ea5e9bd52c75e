"""Rectifiers shared like other adapters: Hub ids, push_to_hub, old folders, never a pickle."""

from pathlib import Path

import pytest
import torch

from rrnet.errors import CheckpointError
from rrnet.rectifier import CONFIG_NAME, WEIGHTS_NAME, RectifierConfig, RelationRectifier, looks_like_hub_id
from rrnet.rectifier_files import load_rectifier

FIXTURE = Path(__file__).parent / "fixtures" / "rectifier-format-1"  # written by rrnet before the Hub mixin


def _small(width=8) -> RelationRectifier:
    torch.manual_seed(0)
    rect = RelationRectifier(RectifierConfig(text_width=width, hidden=8, heads=1))
    with torch.no_grad():
        for p in rect.parameters():
            p.add_(torch.randn_like(p))
    return rect


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_hub_ids_are_told_from_folders(tmp_path):
    assert looks_like_hub_id("someone/relation-rectifier")
    assert not looks_like_hub_id("outputs/placed/rect") and not looks_like_hub_id("./a/b")
    assert not looks_like_hub_id(str(tmp_path)) and not looks_like_hub_id("rect")


def test_a_hub_repository_loads_its_safetensors_only(tmp_path, monkeypatch):
    import huggingface_hub

    repo = tmp_path / "repo"
    _small().save_pretrained(repo)
    torch.save({"not": "loaded"}, repo / "pytorch_model.bin")  # a pickle beside it is never fetched
    asked = {}

    def fake_download(repo_id, allow_patterns=None, **kwargs):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns, **kwargs)
        return str(repo)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    loaded = RelationRectifier.from_pretrained("someone/rect", revision="v1")
    assert _same(loaded, _small())
    assert asked == {"repo_id": "someone/rect", "allow_patterns": [CONFIG_NAME, WEIGHTS_NAME], "revision": "v1"}
    assert _same(load_rectifier("someone/rect"), _small())

    only_bin = tmp_path / "only-bin"
    only_bin.mkdir()
    (repo / CONFIG_NAME).replace(only_bin / CONFIG_NAME)
    (repo / "pytorch_model.bin").replace(only_bin / "pytorch_model.bin")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(only_bin))
    with pytest.raises(CheckpointError, match="rectifier.safetensors: not found"):
        RelationRectifier.from_pretrained("someone/rect")


def test_an_unreachable_hub_is_one_clear_error(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="could not be fetched"):
        load_rectifier("someone/rect")


def test_weights_of_another_shape_never_load_silently(tmp_path):
    _small(width=8).save_pretrained(tmp_path / "a")
    _small(width=16).save_pretrained(tmp_path / "b")
    (tmp_path / "b" / WEIGHTS_NAME).replace(tmp_path / "a" / WEIGHTS_NAME)
    with pytest.raises(CheckpointError, match="do not match"):
        RelationRectifier.from_pretrained(tmp_path / "a")


@pytest.fixture
def hub_uploads(monkeypatch) -> dict:
    """The Hub's API replaced by one that records which files each upload sends (no network)."""
    import huggingface_hub.hub_mixin as mixin

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded[repo_id] = sorted(p.name for p in Path(folder_path).iterdir())
            return "commit"

    monkeypatch.setattr(mixin, "HfApi", FakeApi)
    return uploaded


def test_push_to_hub_uploads_the_saved_folder(tmp_path, hub_uploads, capsys):
    uploaded = hub_uploads
    _small().save_pretrained(tmp_path / "rect", push_to_hub=True, repo_id="someone/rect")
    assert set(uploaded["someone/rect"]) >= {CONFIG_NAME, WEIGHTS_NAME}
    assert not any(name.endswith((".bin", ".pt")) for name in uploaded["someone/rect"])
    assert capsys.readouterr().out == ""


def test_a_folder_from_an_earlier_version_still_loads(tiny_pipe, tmp_path):
    old = load_rectifier(FIXTURE)
    assert not old.config.antisymmetric and not old.config.joint_relations
    embeds = old.prompt_embeds(tiny_pipe, "a red circle above a blue square", alpha=1.0)
    base = old.prompt_embeds(tiny_pipe, "a red circle above a blue square", alpha=0.0)
    assert not torch.equal(embeds, base)
    old.save_pretrained(tmp_path / "again")
    assert _same(RelationRectifier.from_pretrained(tmp_path / "again"), old)


def test_push_to_hub_called_directly_and_loading_print_nothing(tmp_path, hub_uploads, capsys):
    """`rectifier.push_to_hub(repo)` (the README's call) uploads safetensors + JSON only, and neither it
    nor `from_pretrained` writes to stdout (the mixin's own loader prints; it is never used)."""
    uploaded = hub_uploads
    _small().push_to_hub("someone/rect")
    assert uploaded["someone/rect"] == sorted([CONFIG_NAME, WEIGHTS_NAME])
    _small().save_pretrained(tmp_path / "rect")
    assert _same(RelationRectifier.from_pretrained(tmp_path / "rect"), _small())
    assert _same(load_rectifier(tmp_path / "rect"), _small())
    assert capsys.readouterr().out == ""
