import math

import pytest
import torch
import torch.nn.functional as F

from lit_kd.losses import hint_loss, kd_loss


def test_kd_loss_hand_computed():
    # Two samples, three classes, T = 2: computed by hand from the definition.
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [1.0, 0.0, -1.0]])
    T = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = [math.exp(v / T) for v in s_row]
        zt = [math.exp(v / T) for v in t_row]
        ps = [v / sum(zs) for v in zs]
        pt = [v / sum(zt) for v in zt]
        expected += sum(p * math.log(p / q) for p, q in zip(pt, ps))
    expected = expected / 2 * T**2  # batchmean, times T^2
    assert kd_loss(student, teacher, T).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_reduction_is_batchmean_not_elementwise_mean():
    torch.manual_seed(0)
    s, t = torch.randn(8, 100), torch.randn(8, 100)
    batchmean = kd_loss(s, t, 1.0)
    elementwise = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="mean")
    assert batchmean.item() == pytest.approx(elementwise.item() * 100, rel=1e-5)


def test_kd_loss_temperature_squared_scaling():
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    for T in (1.0, 4.0):
        raw = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="batchmean")
        assert kd_loss(s, t, T).item() == pytest.approx(raw.item() * T * T, rel=1e-6)


def test_kd_loss_zero_for_identical_logits_and_direction():
    torch.manual_seed(0)
    z = torch.randn(5, 7)
    assert kd_loss(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    # KL(teacher || student): the gradient pushes the student towards the teacher.
    s = torch.zeros(1, 3, requires_grad=True)
    kd_loss(s, torch.tensor([[5.0, 0.0, 0.0]]), 1.0).backward()
    assert s.grad[0, 0] < 0 < s.grad[0, 1]


def test_kd_loss_bad_input():
    with pytest.raises(ValueError, match="same classes"):
        kd_loss(torch.zeros(2, 10), torch.zeros(2, 100))
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


def test_hint_loss_value_and_shape_check():
    s = torch.tensor([[[[1.0, 2.0]]]])
    t = torch.tensor([[[[0.0, 4.0]]]])
    assert hint_loss(s, t).item() == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="connector"):
        hint_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("loss", ["kd", "hint", "hcl", "pkt"])
def test_losses_follow_one_precision_policy(loss):
    """At least float32: half precision is promoted, float64 is never cast down."""
    from lit_kd.losses import hcl_loss, loss_dtype, pkt_loss

    torch.manual_seed(0)
    call = {
        "kd": lambda a, b: kd_loss(a.flatten(1), b.flatten(1), 2.0),
        "hint": hint_loss,
        "hcl": hcl_loss,
        "pkt": pkt_loss,
    }[loss]
    student, teacher = torch.randn(3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 4, 8, 8, dtype=torch.float64)
    exact = call(student, teacher)
    assert exact.dtype == torch.float64
    for half in (torch.bfloat16, torch.float16):
        value = call(student.to(half), teacher.to(half))
        assert value.dtype == torch.float32 == loss_dtype(student.to(half))
        # Promoted before computing: equal to the float32 loss on the rounded inputs.
        assert value.item() == pytest.approx(call(student.to(half).float(), teacher.to(half).float()).item(), rel=1e-6)
    # float64 keeps digits that a float32 computation loses.
    assert abs(exact.item() - call(student.float(), teacher.float()).item()) < 1e-5
    assert exact.item() != call(student.float(), teacher.float()).double().item()
