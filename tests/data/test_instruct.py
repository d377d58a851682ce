"""Instruction tasks: the offline benchmark, LLaVA conversation files and their bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from retain.data.instruct import OFFLINE_TASKS, load_conversations, load_instruction_task
from retain.errors import RetainError


def write_conv(tmp_path, items, name="train.json"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(i) + "\n" for i in items))
    else:
        path.write_text(json.dumps(items))
    return path


def image(tmp_path, name="a.png"):
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "img" / name)
    return f"img/{name}"


def conv(q, a, img=None, **extra):
    item = {"id": q[:5], "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]}
    if img:
        item["image"] = img
    return {**item, **extra}


def test_offline_benchmark_has_five_skills_with_fixed_splits():
    tasks = {n: load_instruction_task(n) for n in OFFLINE_TASKS}
    assert set(tasks) == {"vqa-shapes", "animal-id", "textile-inspect", "digit-read", "garment-kind"}
    for t in tasks.values():
        assert {"train", "test"} <= set(t.splits) and t.scorer in ("exact", "vqa")
        s = t.split("test")
        assert len(s) > 0 and all(isinstance(a, str) and a for a in s.answers[:50])
    again = load_instruction_task("vqa-shapes").split("test")
    assert again.questions == tasks["vqa-shapes"].split("test").questions  # fixed, from the cache
    assert set(tasks["digit-read"].split("test").answers) == {str(d) for d in range(10)}
    assert load_instruction_task("digits").scorer == "emt"  # a classification task, posed as EMT questions
    # garment-kind: Fashion-MNIST's images, each answered with its kind, never with its class name
    from retain.data import load_task

    g, fashion = tasks["garment-kind"].split("test"), load_task("fashion-mnist").split("test")
    assert g.images[0] is fashion.images[0] or (g.images[0] == fashion.images[0]).all()
    names = load_task("fashion-mnist").class_names
    kinds = {"t-shirt": "top", "shirt": "top", "pullover": "top", "coat": "top", "trouser": "trousers",
             "dress": "dress", "sandal": "footwear", "sneaker": "footwear", "ankle boot": "footwear", "bag": "bag"}
    assert g.answers == [kinds[names[y]] for y in fashion.labels]


def test_conversation_files_json_and_jsonl(tmp_path):
    img = image(tmp_path)
    items = [conv("What colour?", "Grey.", img), conv("Say hi.", "hi"), conv("Count?", "2", img, answers=["2", "two"])]
    for name in ("train.json", "test.jsonl"):
        split = load_conversations(write_conv(tmp_path, items, name))
        assert split.questions == ["What colour?", "Say hi.", "Count?"]
        assert split.answers == ["Grey.", "hi", "2"]
        assert split.images[0].endswith("img/a.png") and split.images[1] is None
        assert split.refs(2) == ["2", "two"] and split.refs(0) == ["Grey."]


@pytest.mark.parametrize("items, message", [
    ([{"id": 7, "conversations": [{"from": "human", "value": "Q?"}]}], r"item 0 \(id 7\).*has no answer turn"),
    ([conv("Q", "A", "img/missing.png")], "missing.png does not exist"),
    ([], "holds no conversations"),
    ([{"id": 1}], "has no `conversations` list"),
    ([{"id": 2, "conversations": ["Q?", {"from": "gpt", "value": "A"}]}], r"item 0 \(id 2\).*turn 0.*'Q\?'"),
    ([{"id": 3, "conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "A"}]}], "turn 0"),
    ([{**conv("Q", "A"), "image": ["a.png", "b.png"]}], r"`image` is \['a.png', 'b.png'\].*one path"),
])
def test_bad_conversation_files_name_the_item(tmp_path, items, message):
    with pytest.raises(RetainError, match=message):
        load_conversations(write_conv(tmp_path, items))


def test_task_spec_paths_from_the_environment(tmp_path, monkeypatch):
    img = image(tmp_path)
    write_conv(tmp_path, [conv("Q?", "A", img)], "train.json")
    write_conv(tmp_path, [conv("Q?", "A", img)], "test.json")
    spec = {"name": "mine", "train": "$MY_ROOT/train.json", "test": "$MY_ROOT/test.json", "scorer": "vqa"}
    with pytest.raises(RetainError, match=r"uses \$MY_ROOT, which is not set"):
        load_instruction_task(spec)
    monkeypatch.setenv("MY_ROOT", str(tmp_path))
    task = load_instruction_task(spec)
    assert task.name == "mine" and task.scorer == "vqa" and len(task.split("train")) == 1
    with pytest.raises(RetainError, match="does not exist"):
        load_instruction_task({**spec, "test": "$MY_ROOT/nope.json"})
    with pytest.raises(RetainError, match="unknown scorer"):
        load_instruction_task({**spec, "scorer": "bleu"})
    with pytest.raises(RetainError, match="Unknown instruction task 'vqa-shape'.*vqa-shapes"):
        load_instruction_task("vqa-shape")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(RetainError, match="not valid JSON"):
        load_instruction_task({**spec, "train": str(tmp_path / "bad.json")})


def test_missing_conversation_files_are_named_before_any_model_is_loaded(tmp_path, monkeypatch, capsys):
    from retain.cli import main
    from retain.data.instruct import check_conversation_files

    (tmp_path / "train.json").write_text("[]")
    spec = {"name": "mine", "train": "$MY_ROOT/train.json", "test": "$MY_ROOT/test.json", "image_root": "$MY_ROOT"}
    monkeypatch.delenv("MY_ROOT", raising=False)
    with pytest.raises(RetainError, match=r"uses \$MY_ROOT, which is not set"):
        check_conversation_files(["vqa-shapes", spec])
    monkeypatch.setenv("MY_ROOT", str(tmp_path))
    with pytest.raises(RetainError, match=r"Task 'mine': its test file .*test.json does not exist"):
        check_conversation_files([spec])
    (tmp_path / "test.json").write_text("[]")
    check_conversation_files([spec])  # all present: no error
    # the CLI checks them first: a hub model that cannot be reached offline is never asked for
    (tmp_path / "test.json").unlink()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: hf:nobody/no-such-model\nfamily: mllm\nprobes: []\nmethods: [lora_ft]\n"
                   f"output_dir: {tmp_path / 'runs'}\nsequence:\n  - {spec}\n".replace("'", ""))
    assert main(["--quiet", "run", str(cfg)]) == 2
    assert "its test file" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_instruction_task_fingerprint_follows_its_items(tmp_path):
    img = image(tmp_path)
    spec = {"name": "mine", "train": str(tmp_path / "train.json"), "test": str(tmp_path / "test.json")}
    write_conv(tmp_path, [conv("Q?", "A", img)], "train.json")
    write_conv(tmp_path, [conv("Q?", "A", img)], "test.json")
    first = load_instruction_task(spec).fingerprint
    assert load_instruction_task(spec).fingerprint == first  # the same files: the same items
    write_conv(tmp_path, [conv("Q?", "B", img)], "test.json")
    assert load_instruction_task(spec).fingerprint != first  # an answer changed
    write_conv(tmp_path, [conv("Q?", "A", img)], "test.json")
    assert load_instruction_task(spec).fingerprint == first
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / img)  # the image file was replaced
    assert load_instruction_task(spec).fingerprint != first
    assert load_instruction_task("digit-read").fingerprint == load_instruction_task("digit-read").fingerprint
