"""Feature and relation losses of the RepDistiller family against their official implementations.

Every fixture in ``tests/fixtures/golden`` was computed by running the official code (RepDistiller,
cross-checked with mdistiller where it has the method) in float64; see each fixture's ``source``
and ``notes``. Values and gradients must agree to 1e-10 relative.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lit_kd.losses import (ab_loss, ab_stage_weights, at_loss, cc_loss, cc_loss_repdistiller, fsp_loss, ft_loss,
                           nst_loss, pkt_cosine_loss, rkd_loss, sp_loss, vid_loss)
from lit_kd.losses.attention import attention_map
from lit_kd.losses.cc import correlation_matrix
from lit_kd.losses.crd import crd_nce_loss
from lit_kd.losses.fsp import fsp_matrix
from lit_kd.losses.rkd import rkd_angle_loss, rkd_distance_loss
from lit_kd.losses.spatial import pool_to_common_size
from lit_kd.methods.ab import ABConnector
from lit_kd.methods.cc import CorrelationEmbed
from lit_kd.methods.crd import (CRDCriterion, draw_negatives, draw_negatives_other_classes, make_contrast_index,
                                update_memory)
from lit_kd.methods.factor_transfer import Paraphraser, Translator
from lit_kd.methods.vid import VIDRegressor
from tests.golden import cases, load_golden


def assert_golden(actual: Tensor, expected: Tensor | float) -> None:
    """Equal to 1e-10 relative; an absolute floor of 1e-15 for entries that are zero up to rounding."""
    expected = torch.as_tensor(expected, dtype=torch.float64)
    actual = actual.detach().to(torch.float64).reshape(expected.shape)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * scale + 1e-15)


def ids(name: str) -> dict:
    """``pytest.mark.parametrize`` arguments: the fixture's cases, named."""
    loaded = cases(name)
    return {"argvalues": loaded, "ids": [case["name"] for case in loaded]}


def prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``state`` under ``prefix.``, with the prefix removed (a module's state dict)."""
    return {key[len(prefix) + 1:]: value for key, value in state.items() if key.startswith(prefix + ".")}


def check_student_loss(case: dict, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    student = case["inputs"]["student"].clone().requires_grad_(True)
    loss = loss_fn(student, case["inputs"]["teacher"])
    assert loss.dim() == 0 and loss.dtype == torch.float64
    loss.backward()
    assert_golden(loss, case["outputs"]["loss"])
    assert_golden(student.grad, case["grads"]["student"])


REPDISTILLER = "HobbitLong/RepDistiller"
FIXTURES = {"at": REPDISTILLER, "sp": REPDISTILLER, "rkd": REPDISTILLER, "pkt_cosine": REPDISTILLER,
            "nst": REPDISTILLER, "vid": REPDISTILLER, "cc_repdistiller": REPDISTILLER, "fsp": REPDISTILLER,
            "ft_repdistiller": REPDISTILLER,
            "ft_paraphraser": REPDISTILLER, "ab": REPDISTILLER, "crd": REPDISTILLER,
            "cc_gaussian_torchdistill": "yoshitomo-matsubara/torchdistill",
            "ft_paper": "Jangho-Kim/Factor-Transfer-pytorch"}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixtures_name_their_official_source(name):
    fixture = load_golden(name)
    assert fixture["source"]["repository"] == FIXTURES[name] and len(fixture["source"]["commit"]) == 40
    assert fixture["notes"] and len(fixture["cases"]) >= 2


LOSSES_OF_TWO_FEATURE_MAPS = [at_loss, nst_loss, sp_loss, rkd_loss, pkt_cosine_loss, cc_loss,
                              lambda s, t: ft_loss(s, t[:, :3]), lambda s, t: ft_loss(s, t, mode="repdistiller"),
                              lambda s, t: ab_loss(s[:, :, :2, :2], t[:, :3]),
                              lambda s, t: fsp_loss([s, s], [t[:, :3], t[:, :3]])]


@pytest.mark.parametrize("loss_fn", LOSSES_OF_TWO_FEATURE_MAPS)
def test_precision_policy(loss_fn):
    # Mixed-precision inputs compute in float32; float64 stays float64 (lit_kd.losses.precision).
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 3, 4, 4), torch.randn(3, 5, 2, 2)
    assert loss_fn(student.bfloat16(), teacher.bfloat16()).dtype == torch.float32
    assert loss_fn(student.double(), teacher.double()).dtype == torch.float64
    assert loss_fn(student.half(), teacher).dtype == torch.float32


# ---------------------------------------------------------------- AT


@pytest.mark.parametrize("case", **ids("at"))
def test_at_matches_repdistiller(case):
    check_student_loss(case, lambda s, t: at_loss(s, t, p=case["params"]["p"]))


def test_at_odd_power_uses_absolute_values_and_hand_value():
    # p = 3 on signed features: the paper's |A|^p, computed by explicit loops.
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 4, 2, 2, dtype=torch.float64)

    def att(feature: Tensor) -> list[list[float]]:
        maps = []
        for sample in feature.tolist():
            values = [sum(abs(sample[c][h][w]) ** 3 for c in range(len(sample))) for h in range(2) for w in range(2)]
            norm = sum(v * v for v in values) ** 0.5
            maps.append([v / norm for v in values])
        return maps

    expected = sum((a - b) ** 2 for qs, qt in zip(att(student), att(teacher)) for a, b in zip(qs, qt)) / 8
    assert at_loss(student, teacher, p=3).item() == pytest.approx(expected, rel=1e-12)
    # The official code's f.pow(p) keeps signs, which differs for odd p.
    signed = [torch.nn.functional.normalize(f.pow(3).mean(1).flatten(1)) for f in (student, teacher)]
    assert (signed[0] - signed[1]).pow(2).mean().item() != pytest.approx(expected, rel=1e-3)


def test_at_non_square_maps_keep_their_aspect():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 8, 4, dtype=torch.float64), torch.randn(2, 5, 4, 2, dtype=torch.float64)
    pooled_student, same_teacher = pool_to_common_size(student, teacher)
    assert pooled_student.shape == (2, 3, 4, 2) and same_teacher is teacher
    expected = (attention_map(pooled_student) - attention_map(teacher)).pow(2).mean()
    assert_golden(at_loss(student, teacher), expected)


def test_at_bad_input():
    with pytest.raises(ValueError, match=r"feature maps \(B, C, H, W\)"):
        at_loss(torch.zeros(2, 8), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="same batch"):
        at_loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))
    with pytest.raises(ValueError, match="p must be"):
        at_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), p=0)


# ---------------------------------------------------------------- SP


@pytest.mark.parametrize("case", **ids("sp"))
def test_sp_matches_repdistiller(case):
    check_student_loss(case, sp_loss)


def test_sp_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        sp_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same batch"):
        sp_loss(torch.randn(2, 4), torch.randn(3, 4))


# ---------------------------------------------------------------- RKD


@pytest.mark.parametrize("case", **ids("rkd"))
def test_rkd_matches_repdistiller(case):
    weights = case["params"]
    check_student_loss(case, lambda s, t: rkd_loss(s, t, weights["w_d"], weights["w_a"]))


def test_rkd_is_the_weighted_sum_of_its_terms_and_vanishes_for_two_samples():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    total = 25 * rkd_distance_loss(student, teacher) + 50 * rkd_angle_loss(student, teacher)
    assert_golden(rkd_loss(student, teacher), total)
    assert rkd_loss(student[:2], teacher[:2]).item() == pytest.approx(0.0, abs=1e-25)


def test_rkd_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        rkd_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same batch"):
        rkd_loss(torch.randn(2, 4), torch.randn(3, 4))


# ---------------------------------------------------------------- PKT (cosine kernel)


@pytest.mark.parametrize("case", **ids("pkt_cosine"))
def test_pkt_cosine_matches_repdistiller(case):
    check_student_loss(case, pkt_cosine_loss)


def test_pkt_cosine_is_not_indistills_pkt():
    from lit_kd.losses import pkt_loss

    torch.manual_seed(0)
    student, teacher = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    assert pkt_cosine_loss(student, teacher).item() != pytest.approx(pkt_loss(student, teacher).item(), rel=1e-3)


def test_pkt_cosine_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        pkt_cosine_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same batch"):
        pkt_cosine_loss(torch.randn(2, 4), torch.randn(3, 4))


# ---------------------------------------------------------------- NST


@pytest.mark.parametrize("case", **ids("nst"))
def test_nst_matches_repdistiller(case):
    check_student_loss(case, nst_loss)


def test_nst_hand_value():
    # One sample, one channel each, two positions: normalized maps a, b give (a.a)^2 + (b.b)^2 - 2 (a.b)^2.
    student = torch.tensor([[[[3.0, 4.0]]]], dtype=torch.float64)
    teacher = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    assert nst_loss(student, teacher).item() == pytest.approx(1 + 1 - 2 * 0.6**2, rel=1e-14)


def test_nst_bad_input():
    with pytest.raises(ValueError, match=r"feature maps \(B, C, H, W\)"):
        nst_loss(torch.zeros(2, 3, 16), torch.zeros(2, 3, 16))


# ---------------------------------------------------------------- VID


@pytest.mark.parametrize("case", **ids("vid"))
def test_vid_matches_repdistiller(case):
    inputs = case["inputs"]
    student = inputs["student"].clone().requires_grad_(True)
    regressor = VIDRegressor(student.shape[1], inputs["teacher"].shape[1], case["params"]["hidden_channels"]).double()
    regressor.load_state_dict({"alpha": inputs["log_scale"],
                               **{f"regressor.{i}.weight": inputs[f"regressor.{i}.weight"] for i in (0, 2, 4)}})
    loss = regressor(student, inputs["teacher"])
    loss.backward()
    assert_golden(loss, case["outputs"]["loss"])
    assert_golden(regressor.variance(), case["outputs"]["variance"])
    assert_golden(student.grad, case["grads"]["student"])
    assert_golden(regressor.alpha.grad, case["grads"]["log_scale"])
    for i in (0, 2, 4):
        assert_golden(regressor.regressor[i].weight.grad, case["grads"][f"regressor.{i}.weight"])


def test_vid_initial_variance_and_hand_value():
    regressor = VIDRegressor(3, 2, init_variance=5.0, eps=1e-5)  # float32 parameters
    torch.testing.assert_close(regressor.variance(), torch.full((2,), 5.0), rtol=1e-6, atol=0)
    assert regressor.regressor[0].weight.shape == (2, 3, 1, 1) and regressor.regressor[2].weight.shape == (2, 2, 1, 1)
    mean = torch.tensor([[[[1.0]], [[2.0]]]], dtype=torch.float64)
    teacher = torch.tensor([[[[3.0]], [[2.0]]]], dtype=torch.float64)
    variance = torch.tensor([2.0, 0.5], dtype=torch.float64)
    expected = (0.5 * (4 / 2.0 + math.log(2.0)) + 0.5 * (0 / 0.5 + math.log(0.5))) / 2
    assert vid_loss(mean, teacher, variance).item() == pytest.approx(expected, rel=1e-14)


def test_vid_bad_input():
    regressor = VIDRegressor(3, 4)
    with pytest.raises(ValueError, match="maps 3 student channels to 4 teacher channels"):
        regressor(torch.zeros(2, 5, 4, 4), torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match="teacher's shape"):
        vid_loss(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 2, 2), torch.ones(4))
    with pytest.raises(ValueError, match="one variance per teacher channel"):
        vid_loss(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, 4), torch.ones(3))
    with pytest.raises(ValueError, match="must exceed eps"):
        VIDRegressor(3, 4, init_variance=0.0)


# ---------------------------------------------------------------- CC


@pytest.mark.parametrize("case", **ids("cc_repdistiller"))
def test_cc_repdistiller_matches_repdistiller(case):
    inputs = case["inputs"]
    student = inputs["student"].clone().requires_grad_(True)
    dim = case["params"]["embed_dim"]
    embeds = {}
    for side in ("s", "t"):
        embed = CorrelationEmbed(inputs["student" if side == "s" else "teacher"][0].numel(), dim).double()
        embed.load_state_dict({"linear.weight": inputs[f"embed_{side}.linear.weight"],
                               "linear.bias": inputs[f"embed_{side}.linear.bias"]})
        embeds[side] = embed
    loss = cc_loss_repdistiller(embeds["s"](student), embeds["t"](inputs["teacher"]))
    loss.backward()
    assert_golden(loss, case["outputs"]["loss"])
    assert_golden(student.grad, case["grads"]["student"])
    for side in ("s", "t"):
        for name in ("weight", "bias"):
            assert_golden(getattr(embeds[side].linear, name).grad, case["grads"][f"embed_{side}.linear.{name}"])


@pytest.mark.parametrize("case", **ids("cc_gaussian_torchdistill"))
def test_cc_kernel_matches_torchdistill(case):
    gamma, order = case["params"]["gamma"], case["params"]["order"]
    student, teacher = case["inputs"]["student"], case["inputs"]["teacher"]
    assert_golden(correlation_matrix(student, gamma, order), case["outputs"]["student_correlation"])
    assert_golden(correlation_matrix(teacher, gamma, order), case["outputs"]["teacher_correlation"])
    # torchdistill reports the unsquared Frobenius distance / B^2; the paper's loss squares it.
    batch = student.shape[0]
    torchdistill_loss = case["outputs"]["torchdistill_loss"]
    assert_golden(cc_loss(student, teacher, gamma, order), (torchdistill_loss * batch**2) ** 2 / batch**2)


def test_cc_hand_value_and_gaussian_limit():
    torch.manual_seed(0)
    student = torch.nn.functional.normalize(torch.randn(3, 4, dtype=torch.float64), dim=1)
    teacher = torch.nn.functional.normalize(torch.randn(3, 6, dtype=torch.float64), dim=1)
    gamma = 0.4

    def series(x: list[float], y: list[float], order: int) -> float:
        inner = sum(a * b for a, b in zip(x, y))
        return math.exp(-2 * gamma) * sum((2 * gamma) ** p / math.factorial(p) * inner**p for p in range(order + 1))

    def loss(order: int, kernel=series) -> float:
        s, t = student.tolist(), teacher.tolist()
        return sum((kernel(t[i], t[j], order) - kernel(s[i], s[j], order)) ** 2 for i in range(3) for j in range(3)) / 9

    assert cc_loss(student, teacher, gamma, 2).item() == pytest.approx(loss(2), rel=1e-12)
    # For unit-norm embeddings a long expansion is the Gaussian kernel exp(-gamma |x - y|^2) itself.
    def gaussian(x: list[float], y: list[float], order: int) -> float:
        return math.exp(-gamma * sum((a - b) ** 2 for a, b in zip(x, y)))

    assert cc_loss(student, teacher, gamma, 20).item() == pytest.approx(loss(0, gaussian), rel=1e-10)


def test_cc_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        cc_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        cc_loss_repdistiller(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="one width"):
        cc_loss_repdistiller(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="gamma"):
        cc_loss(torch.randn(3, 4), torch.randn(3, 4), gamma=0.0)
    with pytest.raises(ValueError, match="expects 10 features"):
        CorrelationEmbed(10, 4)(torch.randn(2, 3, 2, 2))


# ---------------------------------------------------------------- FSP


@pytest.mark.parametrize("case", **ids("fsp"))
def test_fsp_matches_repdistiller(case):
    students = [f.clone().requires_grad_(True) for f in case["inputs"]["student"]]
    loss = fsp_loss(students, case["inputs"]["teacher"])
    loss.backward()
    assert_golden(loss, case["outputs"]["loss"])
    for student, grad in zip(students, case["grads"]["student"]):
        assert_golden(student.grad, grad)


def test_fsp_matrix_hand_value():
    first = torch.arange(8, dtype=torch.float64).reshape(1, 2, 2, 2)
    second = torch.arange(12, dtype=torch.float64).reshape(1, 3, 2, 2) - 5
    expected = [[sum(first[0, i].flatten()[k].item() * second[0, j].flatten()[k].item() for k in range(4)) / 4
                 for j in range(3)] for i in range(2)]
    assert_golden(fsp_matrix(first, second), torch.tensor([expected], dtype=torch.float64))


def test_fsp_bad_input():
    with pytest.raises(ValueError, match="same channels"):
        fsp_loss([torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4)], [torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4)])
    with pytest.raises(ValueError, match="at least 2"):
        fsp_loss([torch.zeros(2, 3, 4, 4)], [torch.zeros(2, 3, 4, 4)])
    with pytest.raises(ValueError, match="two feature maps"):
        fsp_matrix(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))


# ---------------------------------------------------------------- FT


@pytest.mark.parametrize("case", **ids("ft_repdistiller"))
def test_ft_repdistiller_matches_repdistiller(case):
    inputs, rate = case["inputs"], case["params"]["rate"]
    student = inputs["student"].clone().requires_grad_(True)
    paraphraser = Paraphraser(inputs["teacher"].shape[1], rate).double().eval()
    translator = Translator(student.shape[1], inputs["teacher"].shape[1], rate).double().train()
    paraphraser.load_state_dict(prefixed(inputs, "paraphraser"))
    translator.load_state_dict(prefixed(inputs, "translator"))
    with torch.no_grad():
        teacher_factor = paraphraser.encode(inputs["teacher"])
    loss = ft_loss(translator(student), teacher_factor, mode="repdistiller")
    loss.backward()
    assert_golden(loss, case["outputs"]["loss"])
    assert_golden(student.grad, case["grads"]["student"])
    for name, parameter in translator.named_parameters():
        assert_golden(parameter.grad, case["grads"][f"translator.{name}"])


@pytest.mark.parametrize("case", **ids("ft_paraphraser"))
def test_ft_paraphraser_pretraining_matches_repdistiller(case):
    inputs = case["inputs"]
    paraphraser = Paraphraser(inputs["teacher"].shape[1], case["params"]["rate"]).double()
    paraphraser.load_state_dict(prefixed(inputs, "paraphraser"))
    loss = paraphraser.reconstruction_loss(inputs["teacher"])
    loss.backward()
    assert_golden(loss, case["outputs"]["loss"])
    for name, parameter in paraphraser.named_parameters():
        assert_golden(parameter.grad, case["grads"][f"paraphraser.{name}"])


@pytest.mark.parametrize("case", **ids("ft_paper"))
def test_ft_paper_matches_the_authors_code(case):
    check_student_loss(case, lambda s, t: ft_loss(s, t, mode="paper"))


def test_ft_modes_differ_and_shapes():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    repdistiller = ft_loss(student, teacher, mode="repdistiller").item()
    assert ft_loss(student, teacher).item() != pytest.approx(repdistiller, rel=1e-3)
    paraphraser, translator = Paraphraser(8, rate=0.5), Translator(5, 8, rate=0.5)
    factor, reconstruction = paraphraser(torch.randn(2, 8, 4, 4))
    assert factor.shape == (2, 4, 4, 4) and reconstruction.shape == (2, 8, 4, 4)
    assert translator(torch.randn(2, 5, 4, 4)).shape == (2, 4, 4, 4)


def test_ft_bad_input():
    with pytest.raises(ValueError, match="paraphraser's factor channels"):
        ft_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match="mode must be"):
        ft_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), mode="official")
    with pytest.raises(ValueError, match=r"encodes \(8, H, W\) teacher features"):
        Paraphraser(8).encode(torch.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match=r"maps \(5, H, W\) student features"):
        Translator(5, 8)(torch.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match="leaves no factor channels"):
        Paraphraser(1, rate=0.5)


# ---------------------------------------------------------------- AB


@pytest.mark.parametrize("case", **ids("ab"))
def test_ab_matches_repdistiller(case):
    inputs, margin = case["inputs"], case["params"]["margin"]
    students = [f.clone().requires_grad_(True) for f in inputs["student"]]
    teachers = inputs["teacher"]
    connectors = []
    for i, (student, teacher) in enumerate(zip(students, teachers)):
        connector = ABConnector(student.shape[1:], teacher.shape[1:]).double().train()
        connector.load_state_dict(prefixed(inputs, f"connector.connectors.{i}"))
        connectors.append(connector)
    stage_losses = [ab_loss(c(s), t, margin) for c, s, t in zip(connectors, students, teachers)]
    weighted = [w * loss for w, loss in zip(ab_stage_weights(len(students)), stage_losses)]
    total = sum(weighted)
    total.backward()
    assert_golden(total, case["outputs"]["loss"])
    assert_golden(torch.stack(weighted), case["outputs"]["stage_losses"])
    for student, grad in zip(students, case["grads"]["student"]):
        assert_golden(student.grad, grad)
    for i, connector in enumerate(connectors):
        for name, parameter in connector.named_parameters():
            assert_golden(parameter.grad, case["grads"][f"connector.connectors.{i}.{name}"])


def test_ab_hand_value_and_weights():
    teacher = torch.tensor([[2.0, -1.0, 0.0, 3.0]], dtype=torch.float64)
    student = torch.tensor([[0.5, -0.5, -2.0, 1.5]], dtype=torch.float64)
    # active: (1 - 0.5)^2, then 0 (1.5 > margin); inactive: (1 - 0.5)^2, then 0 (-2 < -margin).
    assert ab_loss(student, teacher).item() == pytest.approx(0.25 + 0.25, rel=1e-14)
    assert ab_loss(torch.cat([student, student]), torch.cat([teacher, teacher])).item() == pytest.approx(0.5, rel=1e-14)
    assert ab_stage_weights(3) == pytest.approx([0.75e-3, 1.5e-3, 3e-3], rel=1e-15)


def test_ab_connector_shapes():
    cases_ = [((3, 8, 8), (5, 4, 4)), ((3, 4, 4), (5, 8, 8)), ((3, 6, 6), (5, 4, 4)), ((3, 4, 4), (5, 4, 4)),
              ((4, 4, 4), (4, 4, 4)), ((4, 4, 5), (4, 4, 4))]
    for student_shape, teacher_shape in cases_:
        connector = ABConnector(student_shape, teacher_shape)
        assert connector(torch.randn(2, *student_shape)).shape == (2, *teacher_shape)
    assert not list(ABConnector((4, 4, 4), (4, 4, 4)).parameters())


def test_ab_bad_input():
    with pytest.raises(ValueError, match="cannot map a student feature"):
        ABConnector((3, 3, 3), (5, 8, 8))
    with pytest.raises(ValueError, match="cannot map a student feature"):
        ABConnector((3, 8, 8), (5, 4, 5))
    with pytest.raises(ValueError, match="maps .* student features"):
        ABConnector((3, 8, 8), (5, 4, 4))(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="teacher's shape"):
        ab_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 4, 4, 4))


# ---------------------------------------------------------------- CRD


def crd_from_fixture(case: dict) -> CRDCriterion:
    params, inputs = case["params"], case["inputs"]
    criterion = CRDCriterion(inputs["embed_s.linear.weight"].shape[1], inputs["embed_t.linear.weight"].shape[1],
                             params["num_data"], params["feat_dim"], params["nce_k"], params["nce_t"],
                             params["nce_m"]).double()
    criterion.embed_student.load_state_dict(prefixed(inputs, "embed_s"))
    criterion.embed_teacher.load_state_dict(prefixed(inputs, "embed_t"))
    criterion.memory.student_memory.copy_(inputs["memory_v1"])
    criterion.memory.teacher_memory.copy_(inputs["memory_v2"])
    return criterion


@pytest.mark.parametrize("case", **ids("crd"))
def test_crd_two_steps_match_repdistiller(case):
    inputs, outputs, grads = case["inputs"], case["outputs"], case["grads"]
    criterion = crd_from_fixture(case)
    assert criterion.memory.student_normalization.item() < 0  # Z not estimated yet
    for step in (1, 2):
        criterion.zero_grad()
        student = inputs[f"step{step}_student"].clone().requires_grad_(True)
        loss = criterion(student, inputs[f"step{step}_teacher"], inputs[f"step{step}_index"],
                         inputs[f"step{step}_contrast_index"])
        loss.backward()
        assert_golden(loss, outputs[f"step{step}_loss"])
        assert_golden(student.grad, grads[f"step{step}_student"])
        for side, head in (("s", criterion.embed_student), ("t", criterion.embed_teacher)):
            for name in ("weight", "bias"):
                assert_golden(getattr(head.linear, name).grad, grads[f"step{step}_embed_{side}.linear.{name}"])
        # The bank after this step's momentum update.
        assert_golden(criterion.memory.student_memory, outputs[f"step{step}_memory_v1"])
        assert_golden(criterion.memory.teacher_memory, outputs[f"step{step}_memory_v2"])
    # Z was estimated on the first batch and kept for the second.
    assert_golden(criterion.memory.student_normalization, outputs["normalization_student"])
    assert_golden(criterion.memory.teacher_normalization, outputs["normalization_teacher"])


@pytest.mark.parametrize("case", **ids("crd"))
def test_crd_memory_scores_match_repdistiller(case):
    criterion, inputs = crd_from_fixture(case), case["inputs"]
    with torch.no_grad():
        student_anchored, teacher_anchored = criterion.memory(
            criterion.embed_student(inputs["step1_student"]), criterion.embed_teacher(inputs["step1_teacher"]),
            inputs["step1_contrast_index"])
    assert_golden(student_anchored, case["outputs"]["step1_student_anchored"])
    assert_golden(teacher_anchored, case["outputs"]["step1_teacher_anchored"])
    assert_golden(criterion.memory.student_memory, inputs["memory_v1"])  # scoring leaves the memory alone


def test_crd_nce_loss_hand_value():
    probabilities = torch.tensor([[0.5, 0.1, 0.2], [0.3, 0.05, 0.4]], dtype=torch.float64)
    noise = 2 / 10
    expected = 0.0
    for row in probabilities.tolist():
        expected -= math.log(row[0] / (row[0] + noise + 1e-7))
        expected -= sum(math.log(noise / (p + noise + 1e-7)) for p in row[1:])
    assert crd_nce_loss(probabilities, num_data=10).item() == pytest.approx(expected / 2, rel=1e-14)


def test_update_memory_is_pure_normalized_and_last_duplicate_wins():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    before = memory.clone()
    features = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    updated = update_memory(memory, torch.tensor([0, 2, 0]), features, momentum=0.5)
    assert torch.equal(memory, before)
    # Row 0: its last occurrence (features[2]) from the old row: normalize(0.5 [1, 0] + 0.5 [0, -1]).
    assert_golden(updated[0], torch.tensor([2**-0.5, -(2**-0.5)], dtype=torch.float64))
    assert_golden(updated[1], before[1])
    assert_golden(updated[2], torch.nn.functional.normalize(torch.tensor([1.6, 0.8], dtype=torch.float64), dim=0))


def test_negatives_are_reproducible_from_a_generator():
    first = draw_negatives(4, 50, 100, torch.Generator().manual_seed(3))
    assert first.shape == (4, 50) and 0 <= first.min() and first.max() < 100
    assert torch.equal(first, draw_negatives(4, 50, 100, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, draw_negatives(4, 50, 100, torch.Generator().manual_seed(4)))
    index = torch.tensor([7, 8, 9, 10])
    assert torch.equal(make_contrast_index(index, first)[:, 0], index)


@pytest.mark.parametrize("replacement", [False, True])
def test_negatives_from_other_classes(replacement):
    labels = torch.arange(60) % 3  # 20 samples per class
    targets = torch.tensor([0, 1, 2, 1])
    negatives = draw_negatives_other_classes(targets, labels, 40, torch.Generator().manual_seed(0), replacement)
    assert negatives.shape == (4, 40)
    assert (labels[negatives] != targets.unsqueeze(1)).all()
    if not replacement:  # all 40 samples of the other two classes, each once
        assert all(len(set(row.tolist())) == 40 for row in negatives)
    again = draw_negatives_other_classes(targets, labels, 40, torch.Generator().manual_seed(0), replacement)
    assert torch.equal(negatives, again)
    many = draw_negatives_other_classes(torch.zeros(2000, dtype=torch.long), labels, 8,
                                        torch.Generator().manual_seed(1), replacement=True)
    assert set(many.flatten().tolist()) == set(torch.nonzero(labels != 0).flatten().tolist())


def test_crd_criterion_draws_identical_negatives_for_identical_generators():
    torch.manual_seed(0)
    student, teacher, index = torch.randn(3, 5), torch.randn(3, 4), torch.tensor([1, 4, 6])
    results = []
    for negatives_seed in (2, 2, 3):
        # Every rank seeds the memory's and the negatives' generators alike.
        criterion = CRDCriterion(5, 4, num_data=10, embed_dim=3, num_negatives=6,
                                 generator=torch.Generator().manual_seed(1))
        for head, value in ((criterion.embed_student, 0.1), (criterion.embed_teacher, -0.2)):
            torch.nn.init.constant_(head.linear.weight, value)
            torch.nn.init.constant_(head.linear.bias, value)
        loss = criterion(student, teacher, index, generator=torch.Generator().manual_seed(negatives_seed))
        results.append((loss, criterion.memory.student_memory.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][0], results[2][0])


def test_crd_bad_input():
    criterion = CRDCriterion(5, 4, num_data=10, embed_dim=3, num_negatives=2)
    student, teacher, index = torch.randn(2, 5), torch.randn(2, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"contrast_index must be \(B, 1 \+ K\)"):
        criterion(student, teacher, index, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="outside"):
        criterion(student, teacher, index, torch.tensor([[0, 10], [1, 2]]))
    with pytest.raises(ValueError, match="expects 5 features"):
        criterion(torch.randn(2, 6), teacher, index, torch.tensor([[0, 3], [1, 2]]))
    with pytest.raises(ValueError, match="momentum"):
        update_memory(torch.zeros(4, 2), torch.tensor([0]), torch.ones(1, 2), momentum=1.0)
    with pytest.raises(ValueError, match="K >= 1"):
        crd_nce_loss(torch.ones(2, 1), num_data=10)
    with pytest.raises(ValueError, match="Cannot draw 50 negatives"):
        draw_negatives_other_classes(torch.tensor([0]), torch.arange(60) % 3, 50)
