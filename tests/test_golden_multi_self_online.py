"""Golden tests of the multi-teacher, self- and online-distillation losses.

Official implementations (run unmodified to write the fixtures): MEAL V2, CA-MKD, Tf-KD, PS-KD, DML.
Hand-derived fixtures (no official code): multi-teacher weighting, DistillWeighted, BD-KD. Values and
gradients are compared in float64 at 1e-10 relative.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from golden import cases, load_golden
from lit_kd.losses import (bd_kd_balance_weights, bd_kd_student_loss, bd_kd_teacher_loss, ca_mkd_loss, ca_mkd_weights,
                           distill_weighted_loss, dml_loss, ensemble_soft_targets, kd_loss, meal_v2_discriminator_loss,
                           meal_v2_loss, multi_teacher_kd_loss, pskd_alpha, pskd_loss, pskd_targets, relevance_weights,
                           tf_kd_regularization_loss, tf_kd_self_loss, tf_kd_virtual_teacher)
from lit_kd.methods.meal_v2 import MealV2Discriminator
from lit_kd.methods.multi_teacher import LearnedTeacherWeights

RTOL, ATOL = 1e-10, 1e-13


def assert_close(actual: torch.Tensor | float, expected: torch.Tensor | float) -> None:
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


def assert_close_float32(actual: torch.Tensor | float, expected: torch.Tensor | float) -> None:
    """For official numbers the official code rounds through float32 (said in the fixture's notes)."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-9)


def leaf(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.clone().requires_grad_(True)


def numbered(inputs: dict, prefix: str) -> list[torch.Tensor]:
    keys = sorted((key for key in inputs if key.startswith(prefix)), key=lambda key: int(key.rsplit("_", 1)[1]))
    return [inputs[key] for key in keys]


def test_fixtures_name_their_source() -> None:
    official = {"meal_v2": "szq0214/MEAL-V2", "ca_mkd": "Rorozhl/CA-MKD", "pskd": "lgcnsai/PS-KD-Pytorch",
                "tf_kd_self": "yuanli2333/Teacher-free-Knowledge-Distillation",
                "tf_kd_regularization": "yuanli2333/Teacher-free-Knowledge-Distillation",
                "dml": "YingZhangDUT/Deep-Mutual-Learning"}
    for name, repository in official.items():
        source = load_golden(name)["source"]
        assert source["repository"] == repository and len(source["commit"]) == 40
    for name in ("multi_teacher", "distill_weighted", "bd_kd"):
        source = load_golden(name)["source"]
        assert source["no_official_code"] is True and source["why"]


# ---------------------------------------------------------------- multi-teacher soft labels (hand-derived)

@pytest.mark.parametrize("case", cases("multi_teacher"), ids=lambda case: case["name"])
def test_multi_teacher_kd_loss_matches_hand_derivation(case: dict) -> None:
    inputs, temperature, mode = case["inputs"], case["params"]["temperature"], case["params"]["mode"]
    teachers = numbered(inputs, "teacher_logits_")
    student = leaf(inputs["student_logits"])
    learned = None
    if mode == "learned":
        learned = LearnedTeacherWeights(len(teachers), inputs["weight_logits"])
        weights = learned()
    else:
        weights = inputs.get("weights")
    assert_close(ensemble_soft_targets(teachers, weights, temperature), case["outputs"]["soft_targets"])
    loss = multi_teacher_kd_loss(student, teachers, weights, temperature)
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])
    if learned is not None:
        assert_close(learned.logits.grad, case["grads"]["weight_logits"])


def test_multi_teacher_kd_loss_with_one_teacher_is_kd_loss() -> None:
    student, teacher = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    assert_close(multi_teacher_kd_loss(student, [teacher], temperature=3.0), kd_loss(student, teacher, 3.0))


def test_learned_teacher_weights_start_equal_and_stay_normalized() -> None:
    weights = LearnedTeacherWeights(4)
    assert_close(weights().double(), torch.full((4,), 0.25, dtype=torch.float64))
    weights = LearnedTeacherWeights(3, [1.0, 2.0, 3.0]).double()
    expected = torch.tensor([math.exp(1.0), math.exp(2.0), math.exp(3.0)], dtype=torch.float64)
    assert_close(weights(), expected / expected.sum())


def test_ca_mkd_weights_match_hand_derivation() -> None:
    teachers = [torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], dtype=torch.float64),
                torch.tensor([[-1.0, 1.0, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64),
                torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 2.0]], dtype=torch.float64)]
    labels = torch.tensor([0, 1])
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for b in range(2):
        losses = []
        for logits in teachers:
            row = logits[b].tolist()
            losses.append(-(row[labels[b]] - math.log(sum(math.exp(x) for x in row))))
        normalizer = sum(math.exp(x) for x in losses)
        for k in range(3):
            expected[b, k] = (1.0 - math.exp(losses[k]) / normalizer) / 2.0
    weights = ca_mkd_weights(teachers, labels)
    assert_close(weights, expected)
    assert_close(weights.sum(dim=1), torch.ones(2, dtype=torch.float64))
    assert weights[0].argmax() == 0 and weights[1].argmax() == 1  # the teacher most confident in the label


# ---------------------------------------------------------------- CA-MKD (official code)

@pytest.mark.parametrize("case", cases("ca_mkd"), ids=lambda case: case["name"])
def test_ca_mkd_matches_official(case: dict) -> None:
    inputs, temperature = case["inputs"], case["params"]["temperature"]
    teachers = numbered(inputs, "teacher_logits_")
    student = leaf(inputs["student_logits"])
    if case["params"]["method"] == "AVERAGE_LOSS":
        loss = torch.stack([kd_loss(student, teacher, temperature) for teacher in teachers]).mean()
    else:
        loss = ca_mkd_loss(student, teachers, inputs["labels"], temperature, official=True)
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])


@pytest.mark.parametrize("case", [c for c in cases("ca_mkd") if c["params"]["method"] == "CAMKD"],
                         ids=lambda case: case["name"])
def test_ca_mkd_paper_reading_is_official_times_num_teachers(case: dict) -> None:
    inputs, temperature = case["inputs"], case["params"]["temperature"]
    teachers = numbered(inputs, "teacher_logits_")
    student = leaf(inputs["student_logits"])
    loss = ca_mkd_loss(student, teachers, inputs["labels"], temperature)
    loss.backward()
    assert_close(loss, len(teachers) * case["outputs"]["loss"])
    assert_close(student.grad, len(teachers) * case["grads"]["student_logits"])


# ---------------------------------------------------------------- MEAL V2 (official code)

@pytest.mark.parametrize("case", cases("meal_v2"), ids=lambda case: case["name"])
def test_meal_v2_similarity_loss_matches_official(case: dict) -> None:
    inputs, outputs = case["inputs"], case["outputs"]
    teachers = numbered(inputs, "teacher_logits_")
    assert_close(ensemble_soft_targets(teachers), outputs["soft_target"])
    student = leaf(inputs["student_logits"])
    loss = meal_v2_loss(student, teachers, official=True)
    loss.backward()
    assert_close(loss, outputs["similarity_loss"])
    assert_close(student.grad, case["grads"]["student_logits_similarity"])
    # the paper's KL: the official soft cross-entropy less the entropy of the target, same gradient
    target = outputs["soft_target"]
    entropy = -(target * target.log()).sum(dim=1).mean()
    student = leaf(inputs["student_logits"])
    kl = meal_v2_loss(student, teachers)
    kl.backward()
    assert_close(kl, outputs["similarity_loss"] - entropy)
    assert_close(student.grad, case["grads"]["student_logits_similarity"])
    assert_close(multi_teacher_kd_loss(inputs["student_logits"], teachers, temperature=1.0), kl)


@pytest.mark.parametrize("case", cases("meal_v2"), ids=lambda case: case["name"])
def test_meal_v2_discriminator_matches_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    teachers = numbered(inputs, "teacher_logits_")
    discriminator = MealV2Discriminator(params["num_classes"], params["reduction"]).double()
    with torch.no_grad():
        for index, layer in enumerate(discriminator.layers):
            layer.weight.copy_(inputs[f"weight{index}"])
            layer.bias.copy_(inputs[f"bias{index}"])
    outputs = case["outputs"]
    assert_close(discriminator(inputs["student_logits"]), outputs["student_scores"])
    assert_close(discriminator(torch.stack(teachers).mean(dim=0)), outputs["teacher_scores"])
    assert_close(outputs["teacher_mean_logits"], torch.stack(teachers).mean(dim=0))
    # the official BCE target is a float32 tensor, which makes torch return the loss in float32
    assert outputs["discriminator_loss_dtype"] == "torch.float32"
    student = leaf(inputs["student_logits"])
    loss = discriminator.loss(student, teachers)
    loss.backward()
    assert loss.dtype == torch.float64
    assert_close_float32(loss, outputs["discriminator_loss"])
    assert_close_float32(student.grad, case["grads"]["student_logits_discriminator"])
    for index, layer in enumerate(discriminator.layers):
        assert_close_float32(layer.weight.grad, case["grads"][f"weight{index}"])
        assert_close_float32(layer.bias.grad, case["grads"][f"bias{index}"])


def test_meal_v2_discriminator_loss_by_hand() -> None:
    student_scores = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    teacher_scores = torch.tensor([[0.0, 1.0]], dtype=torch.float64)

    def bce(score: float, target: float) -> float:
        probability = 1.0 / (1.0 + math.exp(-score))
        return -(target * math.log(probability) + (1.0 - target) * math.log(1.0 - probability))

    expected = (bce(0.5, 1.0) + bce(2.0, 0.0) + bce(0.0, 0.0) + bce(1.0, 1.0)) / 4.0
    assert_close(meal_v2_discriminator_loss(student_scores, teacher_scores), expected)


def test_meal_v2_discriminator_scores_are_never_negative_unless_asked() -> None:
    torch.manual_seed(0)
    logits = torch.randn(16, 32) * 5
    assert (MealV2Discriminator(32, 2)(logits) >= 0).all()
    torch.manual_seed(0)
    assert (MealV2Discriminator(32, 2, relu_on_scores=False)(logits) < 0).any()


# ---------------------------------------------------------------- DistillWeighted (hand-derived)

@pytest.mark.parametrize("case", cases("distill_weighted"), ids=lambda case: case["name"])
@pytest.mark.parametrize("as_function", [False, True], ids=["scores", "relevance_function"])
def test_distill_weighted_matches_hand_derivation(case: dict, as_function: bool) -> None:
    inputs, params = case["inputs"], case["params"]
    sources = numbered(inputs, "source_logits_")
    scores = inputs["relevance_scores"]
    relevance = (lambda given: scores) if as_function else scores
    assert_close(relevance_weights(scores, params["relevance_temperature"]), case["outputs"]["weights"])
    student = leaf(inputs["student_logits"])
    loss = distill_weighted_loss(student, sources, relevance, params["temperature"], params["relevance_temperature"])
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])


def test_distill_weighted_relevance_function_sees_the_sources() -> None:
    student = torch.zeros(2, 3, dtype=torch.float64)
    sources = [torch.tensor([[4.0, 0.0, 0.0]] * 2, dtype=torch.float64),
               torch.tensor([[0.0, 4.0, 0.0]] * 2, dtype=torch.float64)]
    seen: list[int] = []

    def first_source_only(given: list[torch.Tensor]) -> torch.Tensor:
        seen.append(len(given))
        return torch.tensor([1.0, 0.0])

    loss = distill_weighted_loss(student, sources, first_source_only)
    assert seen == [2]
    assert_close(loss, kd_loss(student, sources[0], 1.0))


# ---------------------------------------------------------------- Tf-KD (official code)

@pytest.mark.parametrize("case", cases("tf_kd_self"), ids=lambda case: case["name"])
def test_tf_kd_self_matches_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    student = leaf(inputs["student_logits"])
    loss = tf_kd_self_loss(student, inputs["teacher_logits"], inputs["labels"], official=True, **params)
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])


@pytest.mark.parametrize("case", cases("tf_kd_self"), ids=lambda case: case["name"])
def test_tf_kd_self_paper_reading_sums_over_classes(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    num_classes = inputs["student_logits"].shape[1]
    student = leaf(inputs["student_logits"])
    cross_entropy_part = (1.0 - params["alpha"]) * F.cross_entropy(student, inputs["labels"])
    loss = tf_kd_self_loss(student, inputs["teacher_logits"], inputs["labels"], **params)
    expected = cross_entropy_part + num_classes * (case["outputs"]["loss"] - cross_entropy_part)
    assert_close(loss, expected)


@pytest.mark.parametrize("case", cases("tf_kd_regularization"), ids=lambda case: case["name"])
def test_tf_kd_regularization_matches_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    student = leaf(inputs["student_logits"])
    loss = tf_kd_regularization_loss(student, inputs["labels"], official=True, **params)
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])


def test_tf_kd_regularization_paper_reading_by_hand() -> None:
    student = torch.tensor([[1.0, -0.5, 2.0, 0.0], [0.3, 0.3, -1.0, 2.5]], dtype=torch.float64)
    labels = torch.tensor([2, 0])
    alpha, temperature, correct, multiplier = 0.3, 5.0, 0.9, 10.0
    expected = 0.0
    for b in range(2):
        row = student[b].tolist()
        teacher = [correct if c == labels[b] else (1 - correct) / 3 for c in range(4)]
        soft_teacher = [math.exp(p / temperature) for p in teacher]
        soft_teacher = [p / sum(soft_teacher) for p in soft_teacher]
        soft_student = [math.exp(z / temperature) for z in row]
        soft_student = [q / sum(soft_student) for q in soft_student]
        cross_entropy = -(row[labels[b]] - math.log(sum(math.exp(z) for z in row)))
        kl = sum(p * math.log(p / q) for p, q in zip(soft_teacher, soft_student))
        expected += ((1 - alpha) * cross_entropy + alpha * multiplier * kl) / 2
    loss = tf_kd_regularization_loss(student, labels, alpha, temperature, correct, multiplier)
    assert_close(loss, expected)
    virtual = tf_kd_virtual_teacher(labels, 4, correct, dtype=torch.float64)
    assert_close(virtual[0], torch.tensor([0.1 / 3, 0.1 / 3, 0.9, 0.1 / 3], dtype=torch.float64))


# ---------------------------------------------------------------- PS-KD (official code)

@pytest.mark.parametrize("case", [c for c in cases("pskd") if "alpha" in c["outputs"]], ids=lambda case: case["name"])
def test_pskd_alpha_schedule_matches_official(case: dict) -> None:
    params = case["params"]
    total = params["total_epochs"]
    schedule = [pskd_alpha(epoch, total, params["alpha_final"]) for epoch in range(total)]
    assert_close(torch.tensor(schedule), torch.tensor(case["outputs"]["alpha"]))
    assert schedule[-1] == pytest.approx(params["alpha_final"], rel=1e-15)


@pytest.mark.parametrize("case", [c for c in cases("pskd") if "loss" in c["outputs"]], ids=lambda case: case["name"])
def test_pskd_targets_and_loss_match_official(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    assert pskd_alpha(params["epoch"], params["total_epochs"], params["alpha_final"]) == pytest.approx(params["alpha"],
                                                                                                       rel=1e-15)
    num_classes = inputs["student_logits"].shape[1]
    targets = pskd_targets(inputs["labels"], inputs["previous_probabilities"], params["alpha"], num_classes)
    assert_close(targets, case["outputs"]["soft_targets"])
    student = leaf(inputs["student_logits"])
    loss = pskd_loss(student, targets)
    loss.backward()
    assert_close(loss, case["outputs"]["loss"])
    assert_close(student.grad, case["grads"]["student_logits"])


# ---------------------------------------------------------------- DML (official TensorFlow code)

@pytest.mark.parametrize("case", cases("dml"), ids=lambda case: case["name"])
def test_dml_matches_official(case: dict) -> None:
    networks = numbered(case["inputs"], "logits_")
    labels, smoothing = case["inputs"]["labels"], case["params"]["label_smoothing"]
    for index, logits in enumerate(networks):
        peers = [other for position, other in enumerate(networks) if position != index]
        own = leaf(logits)
        loss = dml_loss(own, peers, labels, smoothing, official=True)
        loss.backward()
        # TF1's softmax_cross_entropy reduces in float32: the total at a float32 tolerance ...
        assert_close_float32(loss, case["outputs"]["losses"][index])
        assert_close_float32(own.grad, case["grads"][f"logits_{index}"])
        # ... and the mutual-learning part (everything but the CE) in float64
        cross_entropy_part = leaf(logits)
        F.cross_entropy(cross_entropy_part, labels, label_smoothing=smoothing).backward()
        ce = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        assert_close(loss - ce, case["outputs"]["kl_sums"][index])
        assert_close(own.grad - cross_entropy_part.grad, case["grads"][f"kl_logits_{index}"])


def test_dml_paper_reading_by_hand() -> None:
    networks = [torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.4, 0.1]], dtype=torch.float64),
                torch.tensor([[0.0, 2.0, 0.0], [1.0, -1.0, 0.5]], dtype=torch.float64),
                torch.tensor([[-0.5, 0.5, 1.5], [0.0, 0.0, 3.0]], dtype=torch.float64)]
    labels = torch.tensor([0, 2])

    def probabilities(row: list[float]) -> list[float]:
        exps = [math.exp(x) for x in row]
        return [e / sum(exps) for e in exps]

    expected = 0.0
    for b in range(2):
        own = probabilities(networks[0][b].tolist())
        expected += -math.log(own[labels[b]]) / 2
        for peer in networks[1:]:
            other = probabilities(peer[b].tolist())
            expected += sum(p * math.log(p / q) for p, q in zip(other, own)) / 2 / 2  # batch mean, mean over K-1 peers
    own = leaf(networks[0])
    peers = [leaf(peer) for peer in networks[1:]]
    loss = dml_loss(own, peers, labels)
    assert_close(loss, expected)
    loss.backward()
    assert all(peer.grad is None for peer in peers)  # the peers are targets, not trained by this loss


def test_dml_two_network_readings_agree_but_for_the_epsilon() -> None:
    case = cases("dml")[0]
    first, second = numbered(case["inputs"], "logits_")
    paper = dml_loss(first, [second], case["inputs"]["labels"])
    assert abs(paper.item() - case["outputs"]["losses"][0]) < 1e-6


# ---------------------------------------------------------------- BD-KD (hand-derived)

@pytest.mark.parametrize("case", cases("bd_kd"), ids=lambda case: case["name"])
def test_bd_kd_matches_hand_derivation(case: dict) -> None:
    inputs, params = case["inputs"], case["params"]
    forward, reverse = bd_kd_balance_weights(inputs["student_logits"], inputs["teacher_logits"], params["temperature"],
                                             params["emphasis"])
    assert_close(forward, case["outputs"]["forward_weights"])
    assert_close(reverse, case["outputs"]["reverse_weights"])
    student, teacher = leaf(inputs["student_logits"]), leaf(inputs["teacher_logits"])
    student_loss = bd_kd_student_loss(student, teacher, inputs["labels"], **params)
    student_loss.backward()
    assert teacher.grad is None
    assert_close(student_loss, case["outputs"]["student_loss"])
    assert_close(student.grad, case["grads"]["student_logits"])
    student, teacher = leaf(inputs["student_logits"]), leaf(inputs["teacher_logits"])
    teacher_loss = bd_kd_teacher_loss(teacher, student, inputs["labels"], params["temperature"], params["kd_weight"])
    teacher_loss.backward()
    assert student.grad is None
    assert_close(teacher_loss, case["outputs"]["teacher_loss"])
    assert_close(teacher.grad, case["grads"]["teacher_logits"])


def test_bd_kd_emphasises_reverse_kl_for_an_uncertain_student() -> None:
    teacher = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.1]])
    student = torch.tensor([[0.1, 0.0, 0.0], [0.0, 6.0, 0.0]])
    forward, reverse = bd_kd_balance_weights(student, teacher, emphasis=4.0)
    assert forward.tolist() == [1.0, 4.0] and reverse.tolist() == [4.0, 1.0]


# ---------------------------------------------------------------- precision and bad input

def test_half_precision_inputs_compute_in_float32() -> None:
    student = torch.randn(2, 5, dtype=torch.bfloat16)
    teachers = [torch.randn(2, 5, dtype=torch.bfloat16) for _ in range(2)]
    labels = torch.tensor([0, 3])
    assert multi_teacher_kd_loss(student, teachers).dtype == torch.float32
    assert ca_mkd_loss(student, teachers, labels).dtype == torch.float32
    assert meal_v2_loss(student, teachers).dtype == torch.float32
    assert tf_kd_self_loss(student, teachers[0], labels).dtype == torch.float32
    assert dml_loss(student, teachers, labels).dtype == torch.float32
    assert bd_kd_student_loss(student, teachers[0], labels).dtype == torch.float32


def test_bad_input_gives_clear_errors() -> None:
    student = torch.randn(2, 5)
    teachers = [torch.randn(2, 5), torch.randn(2, 5)]
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="differ in shape"):
        ensemble_soft_targets([torch.randn(2, 5), torch.randn(2, 6)])
    with pytest.raises(ValueError, match="differ in shape"):
        multi_teacher_kd_loss(torch.randn(2, 6), teachers)
    with pytest.raises(ValueError, match="2 teachers: pass one weight per teacher"):
        ensemble_soft_targets(teachers, [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        multi_teacher_kd_loss(student, teachers, [1.5, -0.5])
    with pytest.raises(ValueError, match="sum to zero"):
        ensemble_soft_targets(teachers, [0.0, 0.0])
    with pytest.raises(ValueError, match=r"\(batch, teachers\)"):
        ensemble_soft_targets(teachers, torch.ones(3, 2))
    for temperature in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            multi_teacher_kd_loss(student, teachers, temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        ca_mkd_loss(student, teachers, labels, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        tf_kd_self_loss(student, teachers[0], labels, temperature=-2.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        bd_kd_student_loss(student, teachers[0], labels, temperature=0.0)
    with pytest.raises(ValueError, match="at least two teachers"):
        ca_mkd_weights(teachers[:1], labels)
    with pytest.raises(ValueError, match="class indices"):
        ca_mkd_loss(student, teachers, labels.float())
    with pytest.raises(ValueError, match="at least one teacher"):
        meal_v2_loss(student, [])
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        meal_v2_discriminator_loss(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="empty layer"):
        MealV2Discriminator(10, 8)
    with pytest.raises(ValueError, match="one number per teacher"):
        LearnedTeacherWeights(3, [0.0, 1.0])
    with pytest.raises(ValueError, match="3 relevance scores for 2 sources"):
        distill_weighted_loss(student, teachers, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="pass a temperature"):
        relevance_weights([1.0, -1.0])
    with pytest.raises(ValueError, match="counted from zero"):
        pskd_alpha(10, 10)
    with pytest.raises(ValueError, match="alpha_final must be in"):
        pskd_alpha(0, 10, 1.5)
    with pytest.raises(ValueError, match="Previous predictions"):
        pskd_targets(labels, torch.rand(2, 4), 0.5, 5)
    with pytest.raises(ValueError, match="at least one peer"):
        dml_loss(student, [], labels)
    with pytest.raises(ValueError, match="same classes"):
        dml_loss(student, [torch.randn(2, 4)], labels)
    with pytest.raises(ValueError, match="emphasis must be > 0"):
        bd_kd_balance_weights(student, teachers[0], emphasis=0.0)
