"""Dataset adapters on tiny synthetic files: audio folder with a speaker filter, GoEmotions, MELD, a plain
text CSV, valence/arousal and MOSI CSVs, layout detection and the registry."""

import json
from pathlib import Path

import pytest

from emomesh.evaluation.adapters import (
    ADAPTERS,
    MAX_CONTEXT_TURNS,
    Adapter,
    AdapterOptions,
    ConversationTurn,
    Sample,
    audio_folder,
    detect_adapter,
    get_adapter,
    goemotions,
    meld,
    mosi,
    register_adapter,
    speaker_filter,
    text_csv,
    valence_arousal,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def ravdess_like(root: Path) -> Path:
    rows = ["path,label,orig_label,speaker,source"]
    for actor in (1, 2, 17, 18, 20):
        for label in ("happy", "neutral"):
            rows.append(f"audio/Actor_{actor:02d}/{label}.flac,{label},{label},ravdess_actor{actor:02d},RAVDESS")
    write(root / "labels.csv", "\n".join(rows) + "\n")
    return root


def test_speaker_filter_takes_ids_numbers_and_ranges() -> None:
    accepts = speaker_filter("17-19,emodb_03,21")
    assert [accepts(s) for s in ("ravdess_actor17", "ravdess_actor19", "ravdess_actor20")] == [True, True, False]
    assert accepts("emodb_03") and not accepts("emodb_13")
    assert accepts("x21") and not accepts("actor2")
    assert speaker_filter(None)("anyone")
    with pytest.raises(ValueError, match="runs backwards"):
        speaker_filter("20-17")


def test_audio_folder_keeps_only_the_held_out_speakers(tmp_path: Path) -> None:
    root = ravdess_like(tmp_path / "ravdess")
    held_out = audio_folder(root, speakers="17-20")
    assert [s.id for s in held_out] == [
        f"audio/Actor_{a}/{label}.flac" for a in ("17", "18", "20") for label in ("happy", "neutral")
    ]
    assert all(s.modality == "audio" for s in held_out)
    assert len(audio_folder(root)) == 10
    with pytest.raises(ValueError, match="no samples for speakers '30-31'"):
        audio_folder(root, speakers="30-31")
    write(root / "labels.csv", "path,label\naudio/a.flac,happy\n")
    with pytest.raises(ValueError, match="no speaker column"):
        audio_folder(root, speakers="1")
    write(root / "labels.csv", "path,label\nimages/a.png,happy\n")
    with pytest.raises(ValueError, match=r"is not a .* file"):
        audio_folder(root)


def goemotions_like(root: Path) -> Path:
    # A miniature emotions.txt: ids 0..5.
    write(root / "emotions.txt", "admiration\nanger\njoy\nsadness\nconfusion\nneutral\n")
    mapping = {"anger": ["anger"], "joy": ["joy", "admiration"], "sadness": ["sadness"], "surprise": ["confusion"]}
    write(root / "ekman_mapping.json", json.dumps(mapping))
    write(
        root / "dev.tsv",
        "I love this!\t0,2\tc1\n"  # admiration + joy: both happy -> kept
        "So angry and happy\t1,2\tc2\n"  # angry + happy -> two classes, skipped
        "Meh.\t5\tc3\n"
        "Wait, what?\t4\tc4\n"
        "\t\t\n",
    )
    return root


def test_goemotions_keeps_single_class_rows(tmp_path: Path) -> None:
    root = goemotions_like(tmp_path / "goemotions")
    samples = goemotions(root, "dev")
    assert [(s.id, s.label, s.text) for s in samples] == [
        ("c1", "happy", "I love this!"),
        ("c3", "neutral", "Meh."),
        ("c4", "surprise", "Wait, what?"),
    ]
    assert goemotions(root / "dev.tsv") == samples  # the file itself works too
    assert all(s.modality == "text" for s in samples)
    write(root / "dev.tsv", "x\t9\tc9\n")
    with pytest.raises(ValueError, match=r"not indices into emotions\.txt"):
        goemotions(root, "dev")


def test_meld_maps_emotions_and_normalises_apostrophes(tmp_path: Path) -> None:
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    csv_path = write(
        tmp_path / "meld" / "dev_sent_emo.csv",
        header + "1,I don\x92t know,Joey,joy,positive,0,0\n2,\u201cNo.\u201d,Ross,sadness,negative,0,1\n",
    )
    samples = meld(csv_path.parent)
    assert [(s.id, s.label, s.text) for s in samples] == [
        ("dia0_utt0", "happy", "I don't know"),
        ("dia0_utt1", "sad", "\u201cNo.\u201d"),
    ]
    write(csv_path, header + "1,hi,Joey,contempt,neutral,0,0\n")
    with pytest.raises(ValueError, match="'contempt' is not a MELD emotion"):
        meld(csv_path)


def test_meld_utterances_carry_their_speaker_and_the_earlier_turns_of_their_dialogue(tmp_path: Path) -> None:
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    # Out of order on disk, and two dialogues: context follows Utterance_ID within each dialogue only.
    rows = [
        "1,How are you?,Ross,neutral,neutral,0,0",
        "3,Oh no!,Ross,sadness,negative,0,2",
        "2,I lost my job.,Joey,sadness,negative,0,1",
        "4,Hi!,Rachel,joy,positive,1,0",
    ]
    csv_path = write(tmp_path / "dev_sent_emo.csv", header + "\n".join(rows) + "\n")
    by_id = {s.id: s for s in meld(csv_path)}
    assert by_id["dia0_utt0"].context == ()
    assert by_id["dia0_utt2"].speaker == "Ross"
    assert by_id["dia0_utt2"].context == (
        ConversationTurn("Ross", "How are you?"),
        ConversationTurn("Joey", "I lost my job."),
    )
    assert by_id["dia1_utt0"].context == ()
    long_dialogue = [f"{i},line {i},Joey,neutral,neutral,0,{i}" for i in range(MAX_CONTEXT_TURNS + 3)]
    write(csv_path, header + "\n".join(long_dialogue) + "\n")
    last = meld(csv_path)[-1]
    assert len(last.context) == MAX_CONTEXT_TURNS and last.context[-1].text == f"line {MAX_CONTEXT_TURNS + 1}"
    write(csv_path, header + "1,hi,Joey,joy,positive,0,first\n")
    with pytest.raises(ValueError, match="Utterance_ID 'first' is not a number"):
        meld(csv_path)


def smp_like(path: Path) -> Path:
    """The layout of SMP2020-EWECT's labels.csv: split,id,text,label,orig_label,source; commas, quotes and
    a line break inside texts."""
    rows = [
        "split,id,text,label,orig_label,source",
        "train,1,天使,happy,happy,SMP",
        'train,2,"致敬[心]大家出门记得戴口罩,//@Mr_凡先生:好",happy,happy,SMP',
        "train,3,气死我了,angry,angry,SMP",
        'eval,1,"好害怕\n明天怎么办",fear,fear,SMP',
        "eval,2,  天哪  ,Surprise,surprise,SMP",
    ]
    return write(path, "\n".join(rows) + "\n")


def test_text_csv_reads_texts_labels_and_splits(tmp_path: Path) -> None:
    csv_path = smp_like(tmp_path / "smp" / "labels.csv")
    train = text_csv(csv_path, "train")
    assert [(s.id, s.label, s.text) for s in train] == [
        ("train/1", "happy", "天使"),
        ("train/2", "happy", "致敬[心]大家出门记得戴口罩,//@Mr_凡先生:好"),
        ("train/3", "angry", "气死我了"),
    ]
    assert all(s.modality == "text" for s in train)
    # Every split when none is asked for; ids stay unique across splits that number their rows alike.
    everything = text_csv(csv_path.parent)
    assert [s.id for s in everything] == ["train/1", "train/2", "train/3", "eval/1", "eval/2"]
    assert everything[3].text == "好害怕\n明天怎么办" and everything[4].label == "surprise"
    with pytest.raises(ValueError, match="no samples for split 'test'"):
        text_csv(csv_path, "test")


def test_text_csv_without_split_or_id_columns_takes_ekman_names(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "plain.csv", "label,text\njoy,what a day\nanger,not again\nneutral,ok\n")
    samples = text_csv(csv_path)
    assert [(s.id, s.label) for s in samples] == [("line2", "happy"), ("line3", "angry"), ("line4", "neutral")]
    with pytest.raises(ValueError, match="no split column; leave the split out"):
        text_csv(csv_path, "train")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text\nhello\n", "lacks the column"),
        ("text,label\nhello,bored\n", r"plain\.csv:2: label 'bored' is not one of"),
        ("text,label\nhello,happy\n  ,sad\n", r"plain\.csv:3: the text is empty"),
        ("id,text,label\n7,a,happy\n7,b,sad\n", r"plain\.csv:3: id '7' is already on line 2"),
        ("text,label\n", "has no samples"),
    ],
)
def test_text_csv_refuses_what_it_cannot_score(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        text_csv(write(tmp_path / "plain.csv", content))


def test_valence_arousal_rescales_and_checks_the_range(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "va.csv", "id,text,valence,arousal\na,great day,9,5\nb,awful,1,1\n")
    samples = valence_arousal(csv_path, value_range=(1, 9))
    assert [dict(s.targets) for s in samples] == [{"valence": 1.0, "arousal": 0.0}, {"valence": -1.0, "arousal": -1.0}]
    assert samples[0].label == "" and samples[0].text == "great day"
    with pytest.raises(ValueError, match=r"valence 9\.0 is outside -1\.0\.\.1\.0"):
        valence_arousal(csv_path)
    write(csv_path, "text,mood\nx,1\n")
    with pytest.raises(ValueError, match="valence and/or an arousal"):
        valence_arousal(csv_path)
    media = write(tmp_path / "faces" / "labels.csv", "path,valence\nimg/a.png,0.5\n")
    (sample,) = valence_arousal(media.parent)
    assert sample.path == media.parent / "img" / "a.png" and sample.modality == "image"


def test_mosi_reads_mmsa_exports_with_their_split(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "mosi.csv",
        "video_id,clip_id,text,label,mode\nv1,1,it was great,2.4,test\nv1,2,boring,-1.2,test\nv2,1,ok,0.0,train\n",
    )
    samples = mosi(csv_path, "test")
    assert [(s.id, dict(s.targets)) for s in samples] == [("v1_1", {"sentiment": 2.4}), ("v1_2", {"sentiment": -1.2})]
    assert len(mosi(csv_path)) == 3
    write(csv_path, "text,label\nx,4\n")
    with pytest.raises(ValueError, match=r"outside -3\.\.3"):
        mosi(csv_path)


def test_detect_adapter_from_the_layout(tmp_path: Path) -> None:
    assert detect_adapter(ravdess_like(tmp_path / "ravdess")) == "audio-folder"
    assert detect_adapter(write(tmp_path / "fer" / "labels.csv", "path,label\nimages/a.jpg,happy\n").parent) == (
        "image-folder"
    )
    assert detect_adapter(goemotions_like(tmp_path / "goemotions")) == "goemotions"
    assert detect_adapter(tmp_path / "goemotions" / "dev.tsv") == "goemotions"
    assert detect_adapter(write(tmp_path / "meld" / "dev_sent_emo.csv", "x\n").parent) == "meld"
    assert detect_adapter(write(tmp_path / "va" / "labels.csv", "text,valence\nx,0\n").parent) == "valence-arousal"
    assert detect_adapter(smp_like(tmp_path / "smp" / "labels.csv")) == "text-csv"
    assert detect_adapter(tmp_path / "smp") == "text-csv"
    with pytest.raises(ValueError, match="pass --adapter"):
        detect_adapter(tmp_path / "nothing.csv")
    # A MOSI export has text and label columns too, but its labels are scores.
    with pytest.raises(ValueError, match="pass --adapter"):
        detect_adapter(write(tmp_path / "mosi.csv", "text,label\ngreat,2.0\n"))


def test_registry_is_extensible_and_refuses_duplicates() -> None:
    registered = {"image-folder", "audio-folder", "goemotions", "meld", "text-csv", "valence-arousal", "mosi"}
    assert registered <= set(ADAPTERS)
    assert get_adapter("mosi").task == "sentiment" and get_adapter("valence-arousal").task == "regression"
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        get_adapter("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_adapter(Adapter("meld", "classification", lambda p, o: [], "again"))
    with pytest.raises(ValueError, match="task 'ranking' is not one of"):
        Adapter("x", "ranking", lambda p, o: [], "")
    custom = register_adapter(
        Adapter("test-one-line", "classification", lambda p, o: [Sample("1", "happy", text=p.name)], "test only")
    )
    try:
        assert get_adapter("test-one-line").load(Path("hello"), AdapterOptions()) == [
            Sample("1", "happy", text="hello")
        ]
    finally:
        del ADAPTERS[custom.name]
