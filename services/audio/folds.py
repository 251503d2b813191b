"""Leave-speakers-out folds for speech-emotion cross-validation, shared by every model option.

Four folds. Each holds out whole speakers, balanced by gender where the corpus allows:
- RAVDESS actors 1-20 in male/female pairs (1,2), (3,4), ... (19,20); pair p goes to fold p mod 4, so
  folds hold 6, 6, 4 and 4 actors, half of them women;
- EmoDB's eight shared speakers as four male/female pairs, one pair per fold;
- CASIA's two speakers, one in fold 0 and one in fold 1 (folds 2 and 3 train on both and test on
  neither): a CASIA score is always on a speaker the model never heard.

Inside a fold, the epoch is picked on an inner validation set drawn only from that fold's training
speakers (`inner_validation_speakers`), so the held-out fold scores a model that chose nothing on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

N_FOLDS = 4

# What a model option gives the cross-validation (services/audio/cross_validate.py):
# fit_predict(speakers of all clips, test fold, inner validation speakers) trains on every speaker
# outside the test fold and the validation set, and returns [n_clips, 7] probabilities, of which only
# the test fold's rows are read.
FitPredict = Callable[[np.ndarray, int, list[str]], np.ndarray]

_EMODB_FOLD = {"03": 0, "08": 0, "10": 1, "09": 1, "11": 2, "13": 2, "12": 3, "14": 3}
_CASIA_FOLD = {"ZhaoZuoxiang": 0, "liuchanhg": 1}


def speaker_fold(speaker: str) -> int:
    """The fold that holds out this speaker. Raises ValueError for a speaker of an unknown corpus."""
    if speaker.startswith("ravdess_actor"):
        actor = int(speaker.removeprefix("ravdess_actor"))
        return ((actor - 1) // 2) % N_FOLDS
    if speaker.startswith("emodb_") and speaker.removeprefix("emodb_") in _EMODB_FOLD:
        return _EMODB_FOLD[speaker.removeprefix("emodb_")]
    if speaker in _CASIA_FOLD:
        return _CASIA_FOLD[speaker]
    raise ValueError(f"speaker {speaker!r} has no cross-validation fold (see services/audio/folds.py)")


def inner_validation_speakers(speakers: Iterable[str], test_fold: int | None) -> list[str]:
    """Speakers that pick the epoch when `test_fold` is held out (None: the final model on all speakers).

    From the next fold's speakers: its first RAVDESS actor pair and its first EmoDB speaker (about 160
    clips). CASIA speakers are never used for validation: with only two, each is needed to train or
    to test."""
    source_fold = 0 if test_fold is None else (test_fold + 1) % N_FOLDS
    candidates = sorted({s for s in speakers if speaker_fold(s) == source_fold and s not in _CASIA_FOLD})
    actors = [s for s in candidates if s.startswith("ravdess_actor")][:2]
    emodb = [s for s in candidates if s.startswith("emodb_")][:1]
    return actors + emodb
