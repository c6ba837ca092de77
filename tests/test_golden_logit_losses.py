"""Logit-based losses of issue 13 against numbers computed by their official implementations.

Every fixture in ``tests/fixtures/golden`` was produced by running the official code unmodified (see the
fixture's ``source`` and ``notes``); these tests recompute the same cases with lit_kd's pure functions
and compare values and gradients in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from golden import cases, load_golden

from lit_kd.losses.ctkd import ctkd_lambda, learned_temperature_kd_loss
from lit_kd.losses.dist import dist_loss, dist_terms, pearson_correlation
from lit_kd.losses.dkd import dkd_loss, dkd_terms, dkd_warmup_factor
from lit_kd.losses.logits import kd_loss
from lit_kd.losses.mlkd import (mlkd_batch_loss, mlkd_class_loss, mlkd_confidence_masks, mlkd_instance_loss, mlkd_loss,
                                mlkd_terms)
from lit_kd.losses.nkd import nkd_loss
from lit_kd.losses.standardization import standardize_logits, standardized_kd_loss
from lit_kd.losses.taid import taid_loss, taid_update
from lit_kd.losses.wsld import wsld_loss
from lit_kd.methods.ctkd import GlobalTemperature, InstanceTemperature, reverse_gradient

RTOL, ATOL = 1e-10, 1e-12


def assert_close(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=rtol, atol=atol)


def value_and_grad(loss_fn, student_logits: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    student = student_logits.clone().requires_grad_(True)
    loss = loss_fn(student, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, student)
    return loss.detach(), grad


def named(fixture: str, keep=lambda case: True) -> list:
    return [pytest.param(case, id=case["name"]) for case in cases(fixture) if keep(case)]


def test_fixtures_name_their_official_source() -> None:
    for name in ["dkd", "dist", "logit_standardization", "ctkd", "mlkd", "nkd", "wsld", "taid"]:
        source = load_golden(name)["source"]
        assert len(source["commit"]) == 40 and source["files"], name


# --------------------------------------------------------------------------------------------- DKD
@pytest.mark.parametrize("case", named("dkd", lambda c: "loss" in c["outputs"]
                                       and not c["params"].get("only_official")))
@pytest.mark.parametrize("official", [False, True])
def test_dkd_matches_official(case: dict, official: bool) -> None:
    inputs, params = case["inputs"], case["params"]
    loss, grad = value_and_grad(dkd_loss, inputs["student_logits"], inputs["teacher_logits"], inputs["target"],
                                params["alpha"], params["beta"], params["temperature"], official=official)
    assert_close(loss, case["outputs"]["loss"])
    assert_close(grad, case["grads"]["student_logits"])


def _dkd_by_hand(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, alpha: float, beta: float,
                 temperature: float) -> float:
    """The paper's DKD with explicit loops: the target class removed from the non-target distribution."""
    total = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), target.tolist()):
        s = [v / temperature for v in s_row]
        t = [v / temperature for v in t_row]

        def log_probs(row: list[float], keep: list[int]) -> list[float]:
            top = max(row[k] for k in keep)
            log_norm = top + math.log(sum(math.exp(row[k] - top) for k in keep))
            return [row[k] - log_norm for k in keep]

        everything, rest = list(range(len(s))), [k for k in range(len(s)) if k != y]
        ls, lt = log_probs(s, everything), log_probs(t, everything)
        ps_y, pt_y = math.exp(ls[y]), math.exp(lt[y])
        tckd = sum(p * (math.log(p) - math.log(q)) for p, q in [(pt_y, ps_y), (1 - pt_y, 1 - ps_y)] if p > 0)
        ns, nt = log_probs(s, rest), log_probs(t, rest)
        nckd = sum(math.exp(b) * (b - a) for a, b in zip(ns, nt))
        total += alpha * tckd + beta * nckd
    return total / len(target) * temperature**2


@pytest.mark.parametrize("case", named("dkd", lambda c: "loss" in c["outputs"]))
def test_dkd_follows_the_paper_where_the_official_mask_leaks(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    args = (inputs["student_logits"], inputs["teacher_logits"], inputs["target"], params["alpha"], params["beta"],
            params["temperature"])
    paper = dkd_loss(*args)
    assert_close(paper, _dkd_by_hand(*args), rtol=1e-9, atol=1e-9)
    if params.get("only_official"):
        # a teacher margin above 1000 T: the official -1000 mask leaves mass on the target class
        assert_close(dkd_loss(*args, official=True), case["outputs"]["loss"])
        assert abs(float(paper) - case["outputs"]["loss"]) > 100.0


def test_dkd_terms_sum_to_the_loss_and_vanish_for_identical_logits() -> None:
    case = next(c for c in cases("dkd") if c["name"] == "basic_T4_beta8")
    inputs = case["inputs"]
    tckd, nckd = dkd_terms(inputs["student_logits"], inputs["teacher_logits"], inputs["target"], 4.0)
    assert_close(1.0 * tckd + 8.0 * nckd, case["outputs"]["loss"])
    same = inputs["teacher_logits"]
    assert_close(torch.stack(dkd_terms(same, same.clone(), inputs["target"], 4.0)), torch.zeros(2))


def test_dkd_warmup_factor_matches_official_forward_train() -> None:
    case = next(c for c in cases("dkd") if c["name"] == "warmup_forward_train")
    inputs, params = case["inputs"], case["params"]
    loss = dkd_loss(inputs["student_logits"], inputs["teacher_logits"], inputs["target"], params["alpha"],
                    params["beta"], params["temperature"])
    expected = case["outputs"]["loss_kd"]
    for epoch, official in zip(params["epochs"], expected.tolist()):
        assert_close(dkd_warmup_factor(epoch, params["warmup"]) * loss, official)
    assert dkd_warmup_factor(1, 20) == 1 / 20 and dkd_warmup_factor(20, 20) == 1.0 and dkd_warmup_factor(400, 20) == 1.0


def test_dkd_rejects_bad_input() -> None:
    student, teacher, target = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 4, 2])
    with pytest.raises(ValueError, match="temperature"):
        dkd_loss(student, teacher, target, temperature=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        dkd_loss(student, teacher[:, :4], target)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        dkd_loss(student, teacher, torch.tensor([0, 5, 2]))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        dkd_loss(student, teacher, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="one class index per sample"):
        dkd_loss(student, teacher, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer class indices"):
        dkd_loss(student, teacher, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(student[:, :1], teacher[:, :1], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="warmup_epochs"):
        dkd_warmup_factor(3, 0)


# -------------------------------------------------------------------------------------------- DIST
@pytest.mark.parametrize("case", named("dist"))
def test_dist_matches_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    loss, grad = value_and_grad(dist_loss, inputs["student_logits"], inputs["teacher_logits"], params["beta"],
                                params["gamma"], params["temperature"])
    assert_close(loss, case["outputs"]["loss"])
    assert_close(grad, case["grads"]["student_logits"])
    inter, intra = dist_terms(inputs["student_logits"], inputs["teacher_logits"], params["temperature"])
    assert_close(inter, case["outputs"]["inter"])
    assert_close(intra, case["outputs"]["intra"])


def test_dist_correlation_by_hand() -> None:
    a, b = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64), torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    # centred: (-4/3, -1/3, 5/3) and (1, 0, -1): dot -3, norms sqrt(42)/3 and sqrt(2)
    expected = torch.tensor([-3.0 / (math.sqrt(42) / 3 * math.sqrt(2))], dtype=torch.float64)
    assert_close(pearson_correlation(a, b, eps=0.0), expected)


def test_dist_rejects_bad_input() -> None:
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match="temperature"):
        dist_loss(student, teacher, temperature=-1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        dist_loss(student, teacher[:2])
    with pytest.raises(ValueError, match=r"\(batch, classes\)"):
        dist_loss(student.reshape(3, 5, 1), teacher.reshape(3, 5, 1))


# ---------------------------------------------------------------------------- logit standardization
def _standardization_cases(kind: str) -> list:
    return named("logit_standardization", lambda c: c["params"]["kind"] == kind)


@pytest.mark.parametrize("case", _standardization_cases("standardize"))
def test_standardize_logits_matches_official(case: dict) -> None:
    logits = case["inputs"]["logits"].clone().requires_grad_(True)
    standardized = standardize_logits(logits)
    (grad,) = torch.autograd.grad((standardized * case["inputs"]["weights"]).sum(), logits)
    assert_close(standardized, case["outputs"]["standardized"])
    assert_close(grad, case["grads"]["logits"])


@pytest.mark.parametrize("case", _standardization_cases("kd"))
def test_standardized_kd_matches_official(case: dict) -> None:
    inputs = case["inputs"]
    loss, grad = value_and_grad(standardized_kd_loss, inputs["student_logits"], inputs["teacher_logits"],
                                case["params"]["temperature"])
    assert_close(loss, case["outputs"]["loss"])
    assert_close(grad, case["grads"]["student_logits"])


@pytest.mark.parametrize("case", _standardization_cases("dkd"))
def test_dkd_on_standardized_logits_matches_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]

    def loss_fn(student: torch.Tensor) -> torch.Tensor:
        return dkd_loss(standardize_logits(student), standardize_logits(inputs["teacher_logits"]), inputs["target"],
                        params["alpha"], params["beta"], params["temperature"])

    loss, grad = value_and_grad(loss_fn, inputs["student_logits"])
    assert_close(loss, case["outputs"]["loss"])
    assert_close(grad, case["grads"]["student_logits"])


def test_standardize_logits_conventions_by_hand() -> None:
    row = torch.tensor([[1.0, 2.0, 6.0]], dtype=torch.float64)  # mean 3, squared deviations 4 + 1 + 9 = 14
    assert_close(standardize_logits(row, eps=0.0), (row - 3.0) / math.sqrt(14 / 2))
    assert_close(standardize_logits(row, unbiased=False, eps=0.0), (row - 3.0) / math.sqrt(14 / 3))
    assert_close(standardize_logits(row), (row - 3.0) / (math.sqrt(7) + 1e-7))
    assert_close(standardize_logits(torch.full((2, 4), 3.0, dtype=torch.float64)), torch.zeros(2, 4))
    # invariant to a per-sample shift and positive scale: an affine copy of the teacher is matched exactly
    assert_close(standardized_kd_loss(row, 4.0 * row - 1.0, eps=0.0), 0.0)


def test_standardized_kd_rejects_bad_input() -> None:
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match="temperature"):
        standardized_kd_loss(student, teacher, temperature=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        standardized_kd_loss(student, teacher[:, :3])


# -------------------------------------------------------------------------------------------- CTKD
def _ctkd_cases(kind: str) -> list:
    return named("ctkd", lambda c: c["params"]["kind"] == kind)


@pytest.mark.parametrize("case", _ctkd_cases("schedule"))
def test_ctkd_lambda_matches_official_cosine_decay(case: dict) -> None:
    params = case["params"]
    # official value = -lambda, with the paper's lambda rising from -decay_max to -decay_min
    ours = [-ctkd_lambda(epoch, params["decay_loops"], lambda_min=-params["decay_max"], lambda_max=-params["decay_min"])
            for epoch in params["epochs"]]
    assert_close(torch.tensor(ours, dtype=torch.float64), case["outputs"]["value"])


def test_ctkd_lambda_defaults_by_hand() -> None:
    assert ctkd_lambda(0) == 0.0 and ctkd_lambda(10) == 1.0 and ctkd_lambda(500) == 1.0 and ctkd_lambda(-3) == 0.0
    assert_close(ctkd_lambda(5), 0.5)
    assert_close(ctkd_lambda(1), (1 - math.cos(math.pi / 10)) / 2)


@pytest.mark.parametrize("case", _ctkd_cases("grl"))
def test_reverse_gradient_matches_official_layer(case: dict) -> None:
    x = case["inputs"]["x"].clone().requires_grad_(True)
    y = reverse_gradient(x, -case["params"]["value"])
    (grad,) = torch.autograd.grad(y, x, case["inputs"]["upstream"])
    assert_close(y, case["outputs"]["y"])
    assert_close(grad, case["grads"]["x"])


@pytest.mark.parametrize("case", _ctkd_cases("global"))
def test_global_temperature_and_kd_match_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    lambda_ = ctkd_lambda(params["epoch"])
    assert_close(-lambda_, params["decay_value"])
    module = GlobalTemperature(params["t_start"], params["t_end"]).double()
    with torch.no_grad():
        module.theta.fill_(params["weight"])  # the official module's weight, copied exactly
    student = inputs["student_logits"].clone().requires_grad_(True)
    temperature = module(student, inputs["teacher_logits"], lambda_)
    loss = learned_temperature_kd_loss(student, inputs["teacher_logits"], temperature)
    loss.backward()
    assert_close(temperature.reshape(1), case["outputs"]["temperature"])
    assert_close(loss.reshape(1), case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])
    assert_close(module.theta.grad.reshape(1), case["grads"]["temperature_parameter"])


@pytest.mark.parametrize("case", _ctkd_cases("instance"))
def test_per_sample_temperature_kd_matches_official_readme(case: dict) -> None:
    inputs = case["inputs"]
    student = inputs["student_logits"].clone().requires_grad_(True)
    temperature = inputs["temperature"].clone().requires_grad_(True)
    loss = learned_temperature_kd_loss(student, inputs["teacher_logits"], temperature, teacher_eps=1e-7)
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])
    assert_close(temperature.grad, case["grads"]["temperature"])
    # without the official 1e-7 it is the exact per-sample KD, T_b^2 KL_b, averaged over the batch
    exact = learned_temperature_kd_loss(inputs["student_logits"], inputs["teacher_logits"], inputs["temperature"])
    by_sample = [kd_loss(inputs["student_logits"][b:b + 1], inputs["teacher_logits"][b:b + 1], float(tau))
                 for b, tau in enumerate(inputs["temperature"])]
    assert_close(exact, torch.stack(by_sample).mean())


def test_scalar_learned_temperature_equals_kd_loss() -> None:
    student, teacher = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    assert_close(learned_temperature_kd_loss(student, teacher, torch.tensor(3.0, dtype=torch.float64)),
                 kd_loss(student, teacher, 3.0))


def test_instance_temperature_reverses_gradient_and_spares_the_student() -> None:
    # no official code in the repository: compare with the same MLP evaluated without the reversal
    torch.manual_seed(0)
    module = InstanceTemperature(num_classes=5, hidden_dim=8).double()
    student = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, dtype=torch.float64)
    temperature = module(student, teacher, lambda_=0.25)
    assert temperature.shape == (3,) and bool(((temperature > 1.0) & (temperature < 21.0)).all())
    loss = learned_temperature_kd_loss(student, teacher, temperature)
    grads = torch.autograd.grad(loss, [student, *module.parameters()])

    plain = 1.0 + 20.0 * torch.sigmoid(module.mlp(torch.cat([teacher, student.detach()], dim=1)).squeeze(1))
    assert_close(plain, temperature)
    plain_loss = learned_temperature_kd_loss(student, teacher, plain)
    plain_grads = torch.autograd.grad(plain_loss, [student, *module.parameters()])
    assert_close(grads[0], plain_grads[0])  # the student's gradient: only the KD term, not through the MLP
    for reversed_grad, grad in zip(grads[1:], plain_grads[1:]):
        assert_close(reversed_grad, -0.25 * grad)
    assert float(plain_grads[-1].abs().sum()) > 0


def test_ctkd_rejects_bad_input() -> None:
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        learned_temperature_kd_loss(student, teacher, torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="one value per sample"):
        learned_temperature_kd_loss(student, teacher, torch.ones(2))
    with pytest.raises(ValueError, match="as a tensor"):
        learned_temperature_kd_loss(student, teacher, 4.0)
    with pytest.raises(ValueError, match="differ in shape"):
        learned_temperature_kd_loss(student, teacher[:, :2], torch.tensor(2.0))
    with pytest.raises(ValueError, match="num_loops"):
        ctkd_lambda(3, num_loops=0)
    with pytest.raises(ValueError, match="min_temperature"):
        GlobalTemperature(min_temperature=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        InstanceTemperature(5)(student, teacher[:, :4], 1.0)


# -------------------------------------------------------------------------------------------- MLKD
@pytest.mark.parametrize("case", named("mlkd", lambda c: c["params"]["kind"] == "levels"))
def test_mlkd_levels_match_official(case: dict) -> None:
    inputs, temperature = case["inputs"], case["params"]["temperature"]
    weights = inputs["sample_weight"]
    for key, loss_fn in [("instance_per_sample_weighted", lambda s, t: mlkd_instance_loss(s, t, temperature, weights)),
                         ("class", lambda s, t: mlkd_class_loss(s, t, temperature)),
                         ("batch", lambda s, t: mlkd_batch_loss(s, t, temperature))]:
        loss, grad = value_and_grad(loss_fn, inputs["student_logits"], inputs["teacher_logits"])
        assert_close(loss, case["outputs"][key])
        assert_close(grad, case["grads"][key])
    assert_close(mlkd_instance_loss(inputs["student_logits"], inputs["teacher_logits"], temperature),
                 kd_loss(inputs["student_logits"], inputs["teacher_logits"], temperature))


@pytest.mark.parametrize("case", named("mlkd", lambda c: c["params"]["kind"] == "composite"))
def test_mlkd_composite_matches_official_forward_train(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    student_weak = inputs["student_weak"].clone().requires_grad_(True)
    student_strong = inputs["student_strong"].clone().requires_grad_(True)
    terms = mlkd_terms(student_weak, inputs["teacher_weak"], student_strong, inputs["teacher_strong"],
                       params["base_temperature"], params["kd_weight"], standardize=params["standardize"])
    for key in ["instance", "class", "batch"]:
        assert_close(terms[key], case["outputs"][key])
    total = mlkd_loss(student_weak, inputs["teacher_weak"], student_strong, inputs["teacher_strong"],
                      params["base_temperature"], params["kd_weight"], standardize=params["standardize"])
    assert_close(total, case["outputs"]["total"])
    grad_weak, grad_strong = torch.autograd.grad(total, [student_weak, student_strong])
    assert_close(grad_weak, case["grads"]["student_weak"])
    assert_close(grad_strong, case["grads"]["student_strong"])


def test_mlkd_masks_keep_the_less_confident_half() -> None:
    teacher = torch.tensor([[4.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.5], [0.0, 3.0, 0.0]], dtype=torch.float64)
    sample_mask, class_mask = mlkd_confidence_masks(teacher)
    assert sample_mask.tolist() == [False, True, True, False]  # top probabilities .965, .576, .452, .909
    probs = teacher.softmax(1).sum(0)
    assert class_mask.tolist() == (probs <= probs.median()).tolist()  # odd count: the middle value itself


def test_mlkd_rejects_bad_input() -> None:
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match="temperature"):
        mlkd_batch_loss(student, teacher, 0.0)
    with pytest.raises(ValueError, match="base_temperature"):
        mlkd_loss(student, teacher, student, teacher, base_temperature=-2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        mlkd_class_loss(student, teacher[:, :3], 4.0)
    with pytest.raises(ValueError, match="weak vs strong"):
        mlkd_loss(student, teacher, student[:2], teacher[:2])
    with pytest.raises(ValueError, match="one weight per sample"):
        mlkd_instance_loss(student, teacher, 4.0, sample_weight=torch.ones(3))


# --------------------------------------------------------------------------------------------- NKD
@pytest.mark.parametrize("case", named("nkd"))
def test_nkd_matches_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    if "soft_target" in inputs:  # the official loss reduces soft labels to their argmax
        assert torch.equal(inputs["soft_target"].argmax(1), inputs["target"])
    loss, grad = value_and_grad(nkd_loss, inputs["student_logits"], inputs["teacher_logits"], inputs["target"],
                                params["temperature"], params["gamma"])
    assert_close(loss, case["outputs"]["loss"])
    assert_close(grad, case["grads"]["student_logits"])


def test_nkd_by_hand() -> None:
    student = torch.tensor([[2.0, 0.0, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 3.0, 0.0]], dtype=torch.float64)
    p_s, p_t = student.softmax(1)[0], teacher.softmax(1)[0]
    target_term = -p_t[2] * p_s[2].log()
    # non-target logits (classes 0, 1) divided by lambda = 2
    rest_s, rest_t = torch.tensor([2.0, 0.0]).double() / 2, torch.tensor([1.0, 3.0]).double() / 2
    non_target = -(rest_t.softmax(0) * rest_s.log_softmax(0)).sum()
    expected = target_term + 1.5 * 4 * non_target
    assert_close(nkd_loss(student, teacher, torch.tensor([2]), temperature=2.0, gamma=1.5), expected)


def test_nkd_rejects_bad_input() -> None:
    student, teacher, target = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 4, 2])
    with pytest.raises(ValueError, match="temperature"):
        nkd_loss(student, teacher, target, temperature=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        nkd_loss(student, teacher[:, 1:], target)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        nkd_loss(student, teacher, torch.tensor([0, 9, 2]))
    with pytest.raises(ValueError, match="argmax"):
        nkd_loss(student, teacher, torch.softmax(student, 1).long())


# -------------------------------------------------------------------------------------------- WSLD
@pytest.mark.parametrize("case", named("wsld"))
def test_wsld_matches_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    args = (inputs["teacher_logits"], inputs["target"], params["temperature"])
    loss, grad = value_and_grad(lambda s, *a: params["alpha"] * wsld_loss(s, *a), inputs["student_logits"], *args)
    assert_close(loss, case["outputs"]["cls_kd_loss"])
    assert_close(grad, case["grads"]["cls_kd_student_logits"])
    if "authors_total" in case["outputs"]:  # the authors' distiller: CE + 2.5 * soft loss
        def authors(student: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(student, inputs["target"]) + 2.5 * wsld_loss(student, *args)

        loss, grad = value_and_grad(authors, inputs["student_logits"])
        assert_close(loss, case["outputs"]["authors_total"])
        assert_close(grad, case["grads"]["authors_student_logits"])


def test_wsld_weight_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    # identical networks: ratio 1, weight 1 - 1/e (eps 0), soft term = T^2 * entropy of softmax(z / T)
    probs = (logits / 3.0).softmax(1)
    expected = (1 - math.exp(-1.0)) * 9.0 * -(probs * probs.log()).sum()
    assert_close(wsld_loss(logits, logits.clone(), torch.tensor([1]), temperature=3.0, eps=0.0), expected)


def test_wsld_rejects_bad_input() -> None:
    student, teacher, target = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 4, 2])
    with pytest.raises(ValueError, match="temperature"):
        wsld_loss(student, teacher, target, temperature=float("inf"))
    with pytest.raises(ValueError, match="differ in shape"):
        wsld_loss(student, teacher[:2], target)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        wsld_loss(student, teacher, torch.tensor([0, 5, 2]))


# -------------------------------------------------------------------------------------------- TAID
@pytest.mark.parametrize("case", named("taid", lambda c: c["params"]["kind"] == "loss"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_taid_loss_matches_official(case: dict, dtype: torch.dtype) -> None:
    # the official loss computes in float32 (softmax(..., dtype=float32)): compare at float32 tolerance
    inputs, t = case["inputs"], case["params"]["t"]
    student, teacher = inputs["student_logits"].to(dtype), inputs["teacher_logits"].to(dtype)
    loss, grad = value_and_grad(taid_loss, student, teacher, t, official=True)
    assert loss.dtype == dtype
    assert_close(loss, case["outputs"]["loss"], rtol=2e-6, atol=2e-6)
    assert_close(grad, case["grads"]["student_logits"], rtol=2e-5, atol=1e-7)
    # the paper's KL: the official cross-entropy minus the entropy of the target, the same gradient
    kl, kl_grad = value_and_grad(taid_loss, student, teacher, t)
    target = ((1 - t) * student.double() + t * teacher.double()).softmax(1)
    entropy = -(target * target.log()).sum(1).mean()
    assert_close(kl, case["outputs"]["loss"] - entropy, rtol=2e-6, atol=2e-6)
    exact = dtype == torch.float64
    assert_close(kl_grad, grad, rtol=1e-12 if exact else 1e-6, atol=1e-12 if exact else 1e-7)


def test_taid_loss_at_t1_is_forward_kl() -> None:
    student, teacher = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    assert_close(taid_loss(student, teacher, 1.0), kd_loss(student, teacher, 1.0))
    assert_close(taid_loss(student, teacher, 0.0), 0.0)  # the target is the student itself


def _run_updates(case: dict) -> dict[str, list[float]]:
    params = case["params"]
    t, momentum, previous = params["t_start"], 0.0, math.inf
    record: dict[str, list[float]] = {"t": [], "momentum": [], "previous_loss": []}
    for step, loss in enumerate(case["inputs"]["losses"].tolist()):
        t, momentum, previous = taid_update(t, momentum, previous, loss, step, params["total_steps"], params["t_start"],
                                            params["t_end"], params["alpha"], params["beta"],
                                            adaptive=not params["disable_adaptive"])
        for key, value in (("t", t), ("momentum", momentum), ("previous_loss", previous)):
            record[key].append(value)
    return record


@pytest.mark.parametrize("case", named("taid", lambda c: c["params"]["kind"] == "update"))
def test_taid_update_matches_official_sequence(case: dict) -> None:
    ours = _run_updates(case)
    for key, values in ours.items():
        assert_close(torch.tensor(values, dtype=torch.float64), case["outputs"]["float64"][key], rtol=1e-12, atol=1e-14)
        # the shipped module keeps its buffers in float32
        assert_close(torch.tensor(values, dtype=torch.float64), case["outputs"]["float32"][key], rtol=1e-6, atol=1e-7)
    assert all(later >= earlier for earlier, later in zip(ours["t"], ours["t"][1:]))


def test_taid_rejects_bad_input() -> None:
    student, teacher = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        taid_loss(student, teacher, 1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        taid_loss(student, teacher[:, :2], 0.5)
    with pytest.raises(ValueError, match="t_start"):
        taid_update(0.4, 0.0, 1.0, 0.9, 1, 10, t_start=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        taid_update(0.4, 0.0, 1.0, 0.9, 1, 0)


# ---------------------------------------------------------------------------------- precision policy
def test_logit_losses_compute_mixed_precision_inputs_in_float32() -> None:
    student, teacher = torch.randn(4, 6).bfloat16(), torch.randn(4, 6).bfloat16()
    target = torch.tensor([0, 5, 2, 2])
    losses = [dkd_loss(student, teacher, target), dkd_loss(student, teacher, target, official=True),
              dist_loss(student, teacher), standardized_kd_loss(student, teacher),
              learned_temperature_kd_loss(student, teacher, torch.tensor(2.0).bfloat16()),
              mlkd_loss(student, teacher, student, teacher), nkd_loss(student, teacher, target),
              wsld_loss(student, teacher, target), taid_loss(student, teacher, 0.5)]
    assert all(loss.dtype == torch.float32 and loss.dim() == 0 and torch.isfinite(loss) for loss in losses)
