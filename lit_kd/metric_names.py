"""The names lit_kd logs under: one registry that modules, callbacks and ``lit-kd dashboard`` share.

A dashboard panel names a key; a module logs a key. Both take it from here, so a renamed metric is
renamed everywhere, and the tests check that a real run logs every key a dashboard shows.

Keys with ``{split}`` are logged once per validation split (``val``, ``test``, ...): ``key(AGREEMENT,
"val")`` is ``"val/agreement"``. Keys of training metrics logged both per step and per epoch carry
Lightning's ``_step`` / ``_epoch`` suffix in the loggers; :data:`REGISTRY` names the logged form.
Plain data only: importing this module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Metric", "REGISTRY", "key", "metrics_in", "SECTIONS", "CHAIN_SECTION",
           "ACC", "ACC_TOP5", "LOSS", "TEACHER_ACC", "ACC_GAP", "AGREEMENT", "KL", "ECE", "TEACHER_ECE",
           "RELIABILITY", "CLASS_GAP", "CLASS_GAP_PLOT", "DISAGREEMENTS", "TRAIN_LOSS", "TRAIN_ACC",
           "IMAGES_PER_SEC", "LOSS_TERMS", "LEARNING_RATE", "SUMMARY_LAST_VAL", "SUMMARY_BEST_VAL",
           "SUMMARY_TEST_AT_BEST_VAL", "SUMMARY_BEST_TEST", "SUMMARY_FINAL_TEST", "AMD_CANDIDATES",
           "AMD_CANDIDATES_PLOT", "DISTPRO_PROCESS", "DISTPRO_ALPHA", "DISTPRO_FINAL_WEIGHTS",
           "FUNCTION_MATCHING_VIEWS", "TRAIN_AGREEMENT", "INDISTILL_STAGE", "RETRIEVAL_MAP", "RETRIEVAL_PRECISION",
           "RETRIEVAL_PR_CURVE", "CHAIN_OVERVIEW"]

# ---------------------------------------------------------------- per validation split ({split}/...)
ACC = "{split}/acc"  # StudentModule: the student's top-1 accuracy
ACC_TOP5 = "{split}/acc_top5"  # StudentModule, above 5 classes
LOSS = "{split}/loss"  # StudentModule: the student's cross-entropy
TEACHER_ACC = "{split}/teacher_acc"  # DistillationDiagnostics (and the teacher check on val)
ACC_GAP = "{split}/acc_gap"  # DistillationDiagnostics: teacher accuracy minus student accuracy
AGREEMENT = "{split}/agreement"  # DistillationModule with log_agreement: top-1 match of student and teacher
KL = "{split}/kl"  # DistillationModule with log_agreement: KL(teacher || student) at T = 1
ECE = "{split}/ece"  # DistillationDiagnostics: expected calibration error of the student
TEACHER_ECE = "{split}/teacher_ece"  # DistillationDiagnostics: ... of the teacher
RELIABILITY = "{split}/reliability"  # DistillationDiagnostics: reliability diagram of both (image)
CLASS_GAP = "{split}/class_gap"  # DistillationDiagnostics: per-class accuracy of both (table)
CLASS_GAP_PLOT = "{split}/class_gap_plot"  # DistillationDiagnostics: the classes where the student lags most (image)
DISAGREEMENTS = "{split}/disagreements"  # DistillationDiagnostics: images where teacher and student disagree

# ---------------------------------------------------------------- training
TRAIN_LOSS = "train/loss_epoch"  # StudentModule: the objective, epoch mean
TRAIN_ACC = "train/acc"  # StudentModule: accuracy on the training batches
LOSS_TERMS = r"^train/(?!loss_|acc|images_per_sec).+_epoch$"  # each method's loss terms (regex: they vary)
IMAGES_PER_SEC = "train/images_per_sec"  # ImagesPerSecond
LEARNING_RATE = r"^lr-"  # LearningRateMonitor (regex: named after the optimizer)

# ---------------------------------------------------------------- run summary (RunSummary -> W&B run summary)
SUMMARY_LAST_VAL = "summary/last_val_acc"
SUMMARY_BEST_VAL = "summary/best_val_acc"
SUMMARY_TEST_AT_BEST_VAL = "summary/test_acc_at_best_val"
SUMMARY_BEST_TEST = "summary/best_test_acc"
SUMMARY_FINAL_TEST = "summary/final_test_acc"

# ---------------------------------------------------------------- method pictures and tables
AMD_CANDIDATES = "amd/candidates"  # AMDReport (table)
AMD_CANDIDATES_PLOT = "amd/candidates_plot"  # AMDReport: accuracy vs scale, chosen TA marked (image)
DISTPRO_PROCESS = "distpro/process"  # DistProReport: the α trajectory of every pathway (image)
DISTPRO_ALPHA = "distpro/alpha_heatmap"  # DistProReport: α of every pathway over steps as a heatmap (image)
DISTPRO_FINAL_WEIGHTS = "distpro/final_weights"  # DistProReport (table)
FUNCTION_MATCHING_VIEWS = "function_matching/views"  # FunctionMatchingReport: the images fed, once per epoch (image)
TRAIN_AGREEMENT = "train/agreement_step"  # FunctionMatching: teacher-student top-1 match on the fed images, per step
INDISTILL_STAGE = "indistill/curriculum_stage"  # InDistill: 1..L layer pair, L+1 embedding (PKT), L+2 hand-over
RETRIEVAL_MAP = r"^retrieval/map_"  # RetrievalEvaluation: mAP per distance (regex: one key per distance)
RETRIEVAL_PRECISION = r"^retrieval/precision@"  # RetrievalEvaluation: precision@k per distance (regex)
RETRIEVAL_PR_CURVE = "retrieval/pr_curve"  # RetrievalEvaluation: interpolated precision-recall curves (image)
CHAIN_OVERVIEW = "chain/overview"  # ChainRunner: step, network, parameters, accuracy, time (table, per step's run)


@dataclass(frozen=True)
class Metric:
    """One logged name: ``key`` (may hold ``{split}``; a regex when ``regex``), its ``kind``
    (``"scalar"``, ``"image"``, ``"table"`` or ``"summary"``), the dashboard ``section``, a ``title``, what
    logs it (``source``) and, for method pictures, the method classes that log it (empty: any method
    that ``source`` applies to)."""

    key: str
    kind: str
    section: str
    title: str
    source: str
    methods: tuple[str, ...] = ()
    distillation_only: bool = False
    regex: bool = False

    def at(self, split: str = "val") -> str:
        """The logged key for validation split ``split``."""
        return key(self.key, split)


def key(name: str, split: str = "val") -> str:
    """``name`` with its ``{split}`` filled in (``key(ACC, "test") == "test/acc"``)."""
    return name.replace("{split}", split)


#: Dashboard sections, in order.
SECTIONS = ("Accuracy", "Losses", "Diagnostics", "Pictures", "Throughput and learning rate", "Method")
#: A chain's own section, shown first in a chain's workspace (``lit-kd dashboard --chain``).
CHAIN_SECTION = "Chain"

_DIAG = "DistillationDiagnostics"
REGISTRY: tuple[Metric, ...] = (
    Metric(ACC, "scalar", "Accuracy", "student accuracy", "StudentModule"),
    Metric(TEACHER_ACC, "scalar", "Accuracy", "teacher accuracy", _DIAG, distillation_only=True),
    Metric(ACC_GAP, "scalar", "Accuracy", "teacher - student accuracy", _DIAG, distillation_only=True),
    Metric(TRAIN_ACC, "scalar", "Accuracy", "training accuracy", "StudentModule"),
    Metric(TRAIN_LOSS, "scalar", "Losses", "training objective", "StudentModule"),
    Metric(LOSS_TERMS, "scalar", "Losses", "loss terms", "the method's training_losses", regex=True),
    Metric(LOSS, "scalar", "Losses", "student cross-entropy", "StudentModule"),
    Metric(AGREEMENT, "scalar", "Diagnostics", "teacher-student top-1 agreement", "DistillationModule",
           distillation_only=True),
    Metric(KL, "scalar", "Diagnostics", "KL(teacher || student), T=1", "DistillationModule", distillation_only=True),
    Metric(ECE, "scalar", "Diagnostics", "student ECE", _DIAG, distillation_only=True),
    Metric(TEACHER_ECE, "scalar", "Diagnostics", "teacher ECE", _DIAG, distillation_only=True),
    Metric(CLASS_GAP, "table", "Diagnostics", "per-class accuracy gap", _DIAG, distillation_only=True),
    Metric(RELIABILITY, "image", "Pictures", "reliability diagram", _DIAG, distillation_only=True),
    Metric(CLASS_GAP_PLOT, "image", "Pictures", "classes where the student lags most", _DIAG,
           distillation_only=True),
    Metric(DISAGREEMENTS, "image", "Pictures", "where teacher and student disagree", _DIAG,
           distillation_only=True),
    Metric(IMAGES_PER_SEC, "scalar", "Throughput and learning rate", "images/s", "ImagesPerSecond"),
    Metric(LEARNING_RATE, "scalar", "Throughput and learning rate", "learning rate", "LearningRateMonitor",
           regex=True),
    Metric(SUMMARY_LAST_VAL, "summary", "Runs", "last val acc", "RunSummary"),
    Metric(SUMMARY_BEST_VAL, "summary", "Runs", "best val acc", "RunSummary"),
    Metric(SUMMARY_TEST_AT_BEST_VAL, "summary", "Runs", "test acc at best val", "RunSummary"),
    Metric(SUMMARY_BEST_TEST, "summary", "Runs", "best test acc (optimistic)", "RunSummary"),
    Metric(AMD_CANDIDATES_PLOT, "image", "Method", "AMD candidates: accuracy vs scale", "AMDReport",
           methods=("AMDSearch",)),
    Metric(AMD_CANDIDATES, "table", "Method", "AMD candidates", "AMDReport", methods=("AMDSearch",)),
    Metric(DISTPRO_ALPHA, "image", "Method", "DistPro α per pathway over steps", "DistProReport",
           methods=("DistPro",)),
    Metric(DISTPRO_PROCESS, "image", "Method", "DistPro process", "DistProReport", methods=("DistPro",)),
    Metric(DISTPRO_FINAL_WEIGHTS, "table", "Method", "DistPro final pathway weights", "DistProReport",
           methods=("DistPro",)),
    Metric(FUNCTION_MATCHING_VIEWS, "image", "Method", "function matching: the images fed (shared view, mixup)",
           "FunctionMatchingReport", methods=("FunctionMatching",)),
    Metric(TRAIN_AGREEMENT, "scalar", "Method", "teacher-student agreement on the fed images, per step",
           "FunctionMatching", methods=("FunctionMatching",)),
    Metric(INDISTILL_STAGE, "scalar", "Method", "InDistill curriculum (layer pair, then embedding, then hand-over)",
           "InDistill", methods=("InDistill",)),
    Metric(RETRIEVAL_MAP, "scalar", "Method", "retrieval mAP", "RetrievalEvaluation", methods=("InDistill",),
           regex=True),
    Metric(RETRIEVAL_PRECISION, "scalar", "Method", "retrieval precision@k", "RetrievalEvaluation",
           methods=("InDistill",), regex=True),
    Metric(RETRIEVAL_PR_CURVE, "image", "Method", "retrieval precision-recall curve", "RetrievalEvaluation",
           methods=("InDistill",)),
    Metric(CHAIN_OVERVIEW, "table", CHAIN_SECTION, "chain overview: step, network, parameters, accuracy, time",
           "ChainRunner", methods=("AssistantChain",)),
)


def metrics_in(method: str | None = None, distillation: bool = True) -> list[Metric]:
    """The registry entries a run of ``method`` (a class name; ``None``: a method without pictures of its
    own) logs; ``distillation=False`` for a method without a teacher (no diagnostics)."""
    return [m for m in REGISTRY
            if (not m.methods or (method is not None and method in m.methods))
            and (distillation or not m.distillation_only)]
