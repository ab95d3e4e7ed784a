"""Tests of noisegeom.tasks: two_layer_task is the teacher–student problem it describes, built from
the toolbox's own data and models with the seeds it documents, and reproducible."""

import pytest
import torch

import noisegeom as ng


def test_two_layer_task_is_a_teacher_student_problem():
    task = ng.two_layer_task(d=5, width=7, n=11, alpha=1.0, seed=2)
    assert isinstance(task, ng.Task) and task._fields == ("model", "X", "y", "theta0")
    model, X, y, theta0 = task
    assert isinstance(model, ng.FlatModel)
    assert model.p == 35 and X.shape == (11, 5) and y.shape == (11,)
    assert X.dtype == y.dtype == theta0.dtype == torch.float64
    assert torch.equal(X, ng.gaussian_inputs(11, ng.power_law_spectrum(5, 1.0), seed=2))
    teacher = ng.two_layer_net(5, 4, seed=3)
    assert torch.allclose(y, teacher(teacher.theta0, X))
    assert torch.equal(theta0, ng.two_layer_net(5, 7, seed=2).theta0)
    again = ng.two_layer_task(d=5, width=7, n=11, alpha=1.0, seed=2)
    assert torch.equal(again.y, y) and torch.equal(again.theta0, theta0)
    # the student's activation is the caller's; the teacher (teacher_width units) is always tanh
    relu = ng.two_layer_task(d=5, width=7, n=11, alpha=1.0, activation="relu", teacher_width=2, seed=2)
    teacher2 = ng.two_layer_net(5, 2, activation="tanh", seed=3)
    assert torch.allclose(relu.y, teacher2(teacher2.theta0, X))
    student = ng.two_layer_net(5, 7, activation="relu", seed=2)
    assert torch.equal(relu.model(relu.theta0, X), student(student.theta0, X))
    assert not torch.equal(relu.model(relu.theta0, X), model(theta0, X))


def test_two_layer_task_bad_inputs():
    with pytest.raises(ValueError, match="n"):
        ng.two_layer_task(n=1)
    with pytest.raises(TypeError, match="width"):
        ng.two_layer_task(width=2.5)
    with pytest.raises(ValueError, match="activation"):
        ng.two_layer_task(activation="swish")
