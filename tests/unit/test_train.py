"""The split and the model search: a row keeps its part across releases, and the champion is
chosen on validation, never on the test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from edgewave.tasks.data.ai4i import FEATURES, TARGET, generate
from edgewave.tasks.release.features import Features
from edgewave.tasks.release.train import pick_champion, split_data, train_trees


def rows_of(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def test_a_retraining_split_keeps_the_first_releases_training_rows_out_of_its_test_split() -> None:
    base = generate(6000, 3)
    first = split_data(base)
    with_feedback = pd.concat([base, generate(900, 4)], ignore_index=True)  # the sites' feedback added
    second = split_data(with_feedback.sample(frac=1.0, random_state=9))  # in any order
    leaked = rows_of(first.x_train) & rows_of(second.x_test)
    assert len(leaked) <= 0.02 * len(second.x_test), f"{len(leaked)} of v1's training rows in v2's test split"
    # what a seeded random split (the usual recipe) does instead: most of the test split was trained on
    _, random_test = train_test_split(with_feedback[list(FEATURES)].to_numpy(np.float32), test_size=0.15,
                                      stratify=with_feedback[TARGET], random_state=1)
    assert len(rows_of(first.x_train) & rows_of(random_test)) > 0.5 * len(random_test)


def test_the_split_is_70_15_15_in_each_class_and_disjoint() -> None:
    split = split_data(generate(6000, 5))
    sizes = [len(split.y_train), len(split.y_val), len(split.y_test)]
    assert sizes == [4200, 900, 900]
    rates = [split.y_train.mean(), split.y_val.mean(), split.y_test.mean()]
    assert max(rates) - min(rates) < 0.003, rates
    parts = [rows_of(split.x_train), rows_of(split.x_val), rows_of(split.x_test)]
    assert not (parts[0] & parts[2]) and not (parts[1] & parts[2])


def test_the_search_scores_every_trial_on_validation_and_keeps_the_best() -> None:
    split = split_data(generate(3000, 7), features=Features(FEATURES))
    best = train_trees(split, seed=1, budget=2)
    scores = best.params["search"]
    assert len(scores) == 2 and all(0 < v <= 1 for v in scores.values())
    assert round(best.validation_pr_auc, 4) == max(scores.values())
    assert best.params["trial"] in (1, 2)
    other = train_trees(split, seed=1, budget=1)
    assert pick_champion([other, best]) is (best if best.validation_pr_auc > other.validation_pr_auc else other)


def test_the_demos_bad_model_flags_every_row_whichever_trial_won_on_shuffled_labels() -> None:
    from edgewave.tasks.release.train import flagging_every_row

    frame = generate(3000, 7)
    frame[TARGET] = np.random.default_rng(7).permutation(frame[TARGET].to_numpy())
    split = split_data(frame)
    unweighted = train_trees(split, 7, budget=3)  # trials 1-3: none of them class-weighted
    bad = flagging_every_row(unweighted, split)
    assert bad.metrics.threshold == 0.0 and bad.metrics.recall == 1.0
    assert bad.metrics.precision == np.float64(split.y_test.mean()), "every test row flagged"
    assert (unweighted.predict_proba(split.x_test) >= bad.metrics.threshold).all()


def _scored_split(n: int = 600, seed: int = 3):
    """A split whose rows are numbered (val 0..n-1, test n..2n-1), with 10 % failures: a model
    is then a table of probabilities by row number."""
    from edgewave.tasks.release.train import Split

    rng = np.random.default_rng(seed)
    y = (rng.random(2 * n) < 0.1).astype(np.int64)
    rows = np.arange(2 * n, dtype=np.float32)[:, None]
    return Split(rows[:0], y[:0], rows[:n], y[:n], rows[n:], y[n:], "fp", pd.DataFrame()), y, rng


def _table_model(split, table: np.ndarray, name: str):
    from edgewave.tasks.release.train import _finish

    return _finish("sklearn", None, lambda x: table[x[:, 0].astype(int)], {"trial": name, "estimator": name}, split)


def test_the_blend_averages_models_whose_errors_differ_and_keeps_the_weights_it_chose() -> None:
    from edgewave.tasks.release.train import blend

    split, y, rng = _scored_split()
    a, b = (_table_model(split, y + rng.normal(0, 0.6, len(y)), name) for name in ("a", "b"))
    mixed = blend([a, b], split)
    assert mixed.family == "ensemble"
    assert {id(m) for m in mixed.model.members} == {id(a), id(b)} and abs(sum(mixed.model.weights) - 1) < 1e-9
    assert mixed.validation_pr_auc > max(a.validation_pr_auc, b.validation_pr_auc), "a blend that does not help"
    expected = sum(w * m.predict_proba(split.x_test) for m, w in zip(mixed.model.members, mixed.model.weights))
    np.testing.assert_allclose(mixed.predict_proba(split.x_test), expected)
    assert mixed.metrics.rows == len(split.y_test), "scored on the test split"
    assert sorted(mixed.params["members"]) == ["a:a:none", "b:b:none"]


def test_the_blend_is_the_best_model_itself_when_averaging_does_not_help() -> None:
    from edgewave.tasks.release.train import blend, candidates

    split, y, rng = _scored_split()
    sharp = _table_model(split, y + rng.normal(0, 0.05, len(y)), "sharp")  # ranks the failures first
    noise = _table_model(split, rng.random(len(y)), "noise")
    assert blend([noise, sharp], split) is sharp
    offered = candidates([sharp], noise, split)
    assert [id(m) for m in offered] == [id(sharp), id(noise)], "no blend offered when it does not beat its best"


def test_the_largest_search_budget_the_settings_accept_is_every_trial() -> None:
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release.train import TRIALS

    bounds = {type(m).__name__: m for m in Settings.model_fields["search_budget"].metadata}
    assert bounds["Le"].le == len(TRIALS) and bounds["Ge"].ge == 1
