import pytest

from tests.executor.test_pipeline import branchy_model, plan_for


@pytest.fixture
def saved_run(tmp_path):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    model.save(tmp_path / "m.keras")
    plan.save(tmp_path / "plan.json")
    return tmp_path, plan
