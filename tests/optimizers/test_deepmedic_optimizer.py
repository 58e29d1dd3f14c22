"""DeepMedic RMSProp: steps against hand-computed values, L1/L2 groups, lr / momentum schedule."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine

from strokeseg.networks.deepmedic import DeepMedic
from strokeseg.optimizers.deepmedic import DeepMedicRMSprop, DeepMedicSchedule, deepmedic_parameter_groups


def _run(optimiser_kwargs, grads, theta0=1.0):
    theta = torch.nn.Parameter(torch.tensor([theta0], dtype=torch.float64))
    optimiser = DeepMedicRMSprop([theta], **optimiser_kwargs)
    values = []
    for g in grads:
        theta.grad = torch.tensor([g], dtype=torch.float64)
        optimiser.step()
        values.append(theta.item())
    return values


def test_two_steps_match_the_hand_computed_update():
    # lr 0.1, rho 0.9, eps 1e-4, mu 0.6, normalised Nesterov; gradients 2 then -1
    # step 1: v = 0.1 * 4 = 0.4;             s = 0.4 * 0.1 * 2 / sqrt(0.4001)        = 0.126475...
    #         u = -s;                        theta = 1 + 0.6 * u - s = 1 - 1.6 s
    # step 2: v = 0.9 * 0.4 + 0.1 * 1 = 0.46; s2 = 0.4 * 0.1 * (-1) / sqrt(0.4601)
    #         u2 = 0.6 * u - s2;             theta2 = theta + 0.6 * u2 - s2
    s1 = 0.4 * 0.1 * 2 / math.sqrt(0.4001)
    u1 = -s1
    theta1 = 1 - 1.6 * s1
    s2 = 0.4 * 0.1 * -1 / math.sqrt(0.4601)
    u2 = 0.6 * u1 - s2
    theta2 = theta1 + 0.6 * u2 - s2
    got = _run({"lr": 0.1, "rho": 0.9, "eps": 1e-4, "momentum": 0.6}, [2.0, -1.0])
    assert got == pytest.approx([theta1, theta2], abs=1e-12)
    assert theta1 == pytest.approx(0.797640, abs=1e-6)


def test_eps_inside_the_root_differs_from_torch_rmsprop():
    # no momentum: theta - lr * g / sqrt(v + eps); torch divides by sqrt(v) + eps
    ours = _run({"lr": 0.1, "eps": 1e-2, "momentum": 0.0}, [0.05])[0]
    assert ours == pytest.approx(1 - 0.1 * 0.05 / math.sqrt(0.1 * 0.05**2 + 1e-2), abs=1e-12)
    theta = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    torch_rms = torch.optim.RMSprop([theta], lr=0.1, alpha=0.9, eps=1e-2)
    theta.grad = torch.tensor([0.05], dtype=torch.float64)
    torch_rms.step()
    assert abs(float(theta) - ours) > 1e-3


def test_classic_and_unnormalised_momentum_variants():
    classic = _run({"lr": 0.1, "momentum": 0.5, "nesterov": False, "normalised": False}, [1.0, 1.0])
    s1, s2 = 0.1 / math.sqrt(0.1 + 1e-4), 0.1 / math.sqrt(0.19 + 1e-4)
    assert classic == pytest.approx([1 - s1, 1 - s1 + (0.5 * -s1 - s2)], abs=1e-12)


def test_l1_l2_act_on_convolution_weights_only():
    net = DeepMedic(features=(4, 4), residual_layers=(), fc_features=(5,), fc_dropout=(0.0, 0.0))
    groups = deepmedic_parameter_groups(net, l1=1e-6, l2=1e-4)
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in convs}
    assert groups[1]["l2"] == 0.0 and len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(net.parameters()))
    # a zero gradient still moves a regularised weight by the decay: g = l1 * sign(w) + 2 * l2 * w
    got = _run({"lr": 0.1, "momentum": 0.0, "l1": 0.01, "l2": 0.1}, [0.0], theta0=2.0)[0]
    g = 0.01 + 2 * 0.1 * 2.0
    assert got == pytest.approx(2.0 - 0.1 * g / math.sqrt(0.1 * g * g + 1e-4), abs=1e-12)


def test_schedule_decays_lr_exponentially_and_raises_momentum_linearly():
    theta = torch.nn.Parameter(torch.zeros(1))
    optimiser = DeepMedicRMSprop([theta], lr=1e-3, momentum=0.6)
    schedule = DeepMedicSchedule(optimiser, epochs=35, lr_end=1e-4, momentum_end=0.9)
    assert schedule.values(1)[0] == pytest.approx((1e-3, 0.6))
    assert schedule.values(35)[0] == pytest.approx((1e-4, 0.9))
    assert schedule.values(18)[0] == pytest.approx((math.sqrt(1e-3 * 1e-4), 0.75))
    engine = Engine(lambda e, b: None)
    schedule.attach(engine)
    engine.run([0], max_epochs=35)
    assert optimiser.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert optimiser.param_groups[0]["momentum"] == pytest.approx(0.9)
    assert DeepMedicSchedule(optimiser, epochs=1).values(1)[0][0] == pytest.approx(optimiser.param_groups[0]["lr"])


def test_bad_arguments_are_refused():
    for kwargs in ({"eps": 0}, {"momentum": 1.0}, {"rho": 1.0}, {"lr": -1}, {"l2": -1}):
        with pytest.raises(ValueError):
            DeepMedicRMSprop([torch.nn.Parameter(torch.zeros(1))], **kwargs)
