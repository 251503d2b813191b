"""Leave-speakers-out folds: every speaker in exactly one fold, and validation never from the test fold."""

from __future__ import annotations

import pytest

from services.audio.folds import N_FOLDS, inner_validation_speakers, speaker_fold

RAVDESS = [f"ravdess_actor{n:02d}" for n in range(1, 21)]
EMODB = [f"emodb_{n}" for n in ("03", "08", "09", "10", "11", "12", "13", "14")]
CASIA = ["ZhaoZuoxiang", "liuchanhg"]
SPEAKERS = RAVDESS + EMODB + CASIA


def test_each_fold_holds_out_men_and_women_of_every_corpus_it_tests() -> None:
    for fold in range(N_FOLDS):
        actors = [int(s[-2:]) for s in RAVDESS if speaker_fold(s) == fold]
        # RAVDESS: odd actors are men, even ones women; pairs stay together.
        assert len(actors) in (4, 6) and sum(a % 2 for a in actors) == len(actors) // 2
        assert len([s for s in EMODB if speaker_fold(s) == fold]) == 2
    assert sorted(speaker_fold(s) for s in CASIA) == [0, 1]


@pytest.mark.parametrize("fold", [*range(N_FOLDS), None])
def test_inner_validation_comes_from_the_training_speakers_only(fold: int | None) -> None:
    training = [s for s in SPEAKERS if fold is None or speaker_fold(s) != fold]
    validation = inner_validation_speakers(training, fold)
    assert set(validation) <= set(training)
    assert len([s for s in validation if s.startswith("ravdess")]) == 2
    assert len([s for s in validation if s.startswith("emodb")]) == 1
    assert not set(validation) & set(CASIA)


def test_a_speaker_of_an_unknown_corpus_is_refused() -> None:
    with pytest.raises(ValueError, match="no cross-validation fold"):
        speaker_fold("iemocap_ses01")
