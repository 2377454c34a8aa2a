"""The split and the model search: a row keeps its part across releases, and the champion is
chosen on validation, never on the test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from edgewave.tasks.release.data import FEATURES, TARGET, generate
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
