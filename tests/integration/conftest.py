from __future__ import annotations

import pytest

from tasks.data import generate
from tasks.export import Export, export_model
from tasks.train import Split, TrainedModel, split_data, train_sklearn, train_torch


@pytest.fixture(scope="session")
def split() -> Split:
    return split_data(generate(6000, 21), seed=0)


@pytest.fixture(scope="session")
def trained(split: Split) -> dict[str, TrainedModel]:
    return {"sklearn": train_sklearn(split), "torch": train_torch(split, epochs=40)}


@pytest.fixture(scope="session")
def exported(trained: dict[str, TrainedModel], split: Split) -> dict[str, Export]:
    return {family: export_model(model, split.x_test, split.y_test) for family, model in trained.items()}
