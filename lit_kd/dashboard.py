"""A ready-made W&B workspace for distillation runs (``lit-kd dashboard``).

Sections: accuracy (student, teacher, gap), losses (the objective and each term), diagnostics
(:class:`~lit_kd.callbacks.DistillationDiagnostics`), pictures, throughput and learning rate, the
method's own pictures, and a runs table with the run summary's last / best-val / test columns. Every
panel's key comes from :mod:`lit_kd.metric_names`, the names the modules log with.

Needs the ``dashboard`` extra (``pip install lit-kd[dashboard]``: the ``wandb-workspaces`` library),
imported only when a workspace is built. Building needs no network; saving needs a W&B login.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lit_kd import metric_names as names

__all__ = ["build_workspace", "panel_keys", "dashboard_main"]

_SECTION_TITLES = {"Accuracy": "Accuracy (student, teacher, gap)", "Losses": "Losses",
                   "Diagnostics": "Diagnostics", "Pictures": "Teacher vs student pictures",
                   "Throughput and learning rate": "Throughput and learning rate", "Method": "Method pictures"}


def _workspaces() -> tuple[Any, Any, Any]:
    try:
        import wandb_workspaces.reports.v2 as reports
        import wandb_workspaces.workspaces as workspaces
        from wandb_workspaces import expr
    except ImportError as err:
        raise ImportError("lit-kd dashboard needs the wandb-workspaces library: "
                          "pip install 'lit-kd[dashboard]'") from err
    return workspaces, reports, expr


def build_workspace(entity: str, project: str, method: str | None = None, split: str = "val",
                    chain: str | None = None, distillation: bool = True, name: str | None = None) -> Any:
    """The workspace (a ``wandb_workspaces.workspaces.Workspace``, not saved) for runs of ``method`` (a
    lit_kd class name such as ``"KD"`` or ``"AMDSearch"``: adds its own pictures) in ``entity/project``.

    ``chain``: only the runs of that assistant chain (its W&B group), one line per step (job type),
    plus a chain-overview section comparing the steps. ``distillation=False`` for a method without a
    teacher (no diagnostics).
    """
    workspaces, reports, expr = _workspaces()
    metrics = names.metrics_in(method, distillation)
    sections = []
    if chain is not None:
        overview = [reports.LinePlot(title=f"{split} accuracy per step", x="Step", y=[names.key(names.ACC, split)]),
                    reports.BarPlot(title="best val accuracy per step", metrics=[names.SUMMARY_BEST_VAL])]
        overview += [_panel(reports, metric, split) for metric in names.metrics_in("AssistantChain")
                     if metric.section == names.CHAIN_SECTION]
        sections.append(workspaces.Section(name=f"Chain {chain}: overview", panels=overview, is_open=True))
    for section in names.SECTIONS:
        panels = []
        in_section = [m for m in metrics if m.section == section]
        if section == "Accuracy" and distillation:  # the two accuracies on one chart first
            panels.append(reports.LinePlot(title="student vs teacher accuracy", x="Step",
                                           y=[names.key(names.ACC, split), names.key(names.TEACHER_ACC, split)]))
        for metric in in_section:
            panels.append(_panel(reports, metric, split))
        if panels:
            sections.append(workspaces.Section(name=_SECTION_TITLES[section], panels=panels, is_open=True))
    columns = [f"summary:{m.key}" for m in metrics if m.kind == "summary"]
    filters = [expr.Metric("Group") == chain] if chain is not None else []
    groupby = [expr.Metric("JobType")] if chain is not None else []
    runset = workspaces.RunsetSettings(filters=filters, groupby=groupby, pinned_columns=columns)
    title = name or (f"lit_kd chain {chain}" if chain else f"lit_kd {method or 'distillation'}")
    return workspaces.Workspace(entity=entity, project=project, name=title, sections=sections, runset_settings=runset)


def _panel(reports: Any, metric: names.Metric, split: str) -> Any:
    key = metric.at(split)
    if metric.kind == "image":
        return reports.MediaBrowser(title=metric.title, media_keys=[key])
    if metric.kind == "table":
        return reports.WeavePanelSummaryTable(table_name=key)
    if metric.regex:
        return reports.LinePlot(title=metric.title, x="Step", metric_regex=key)
    return reports.LinePlot(title=metric.title, x="Step", y=[key])


def panel_keys(workspace: Any) -> dict[str, str]:
    """Every key the workspace shows, with how: ``"line"``, ``"regex"`` (a pattern of keys), ``"image"``,
    ``"table"`` or ``"summary"`` (runs-table column)."""
    out: dict[str, str] = {}
    for section in workspace.sections:
        for panel in section.panels:
            kind = type(panel).__name__
            if kind == "LinePlot":
                out.update({k: "line" for k in panel.y or []})
                if panel.metric_regex:
                    out[panel.metric_regex] = "regex"
            elif kind == "BarPlot":
                out.update({k: "summary" for k in panel.metrics or []})
            elif kind == "MediaBrowser":
                out.update({k: "image" for k in panel.media_keys or []})
            elif kind == "WeavePanelSummaryTable":
                out[panel.table_name] = "table"
    for column in workspace.runset_settings.pinned_columns:
        if column.startswith("summary:"):
            out[column[len("summary:"):]] = "summary"
    return out


def _has_teacher(parser: argparse.ArgumentParser, method: str) -> bool:
    """Whether lit_kd method ``method`` distills from a frozen teacher (diagnostics panels); a name that
    is no lit_kd method is refused, so a typo does not quietly drop the method's own panels."""
    import lightning as L

    from lit_kd import methods
    from lit_kd.methods.base import DistillationModule

    found = getattr(methods, method, None)
    if not (isinstance(found, type) and issubclass(found, L.LightningModule)):
        known = sorted(n for n in methods.__all__ if isinstance(getattr(methods, n), type)
                       and issubclass(getattr(methods, n), L.LightningModule))
        parser.error(f"--method {method!r} is not a lit_kd method; one of: {', '.join(known)}")
    return issubclass(found, DistillationModule)


def dashboard_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lit-kd dashboard",
        description="build a W&B workspace laid out for distillation runs and save it to ENTITY/PROJECT")
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", required=True, help="W&B project of the runs")
    parser.add_argument("--chain", default=None, help="an assistant chain's name (its W&B group): one line per step")
    parser.add_argument("--method", default=None, help="a lit_kd method class (AMDSearch, DistPro, FunctionMatching, "
                        "...): adds its own pictures")
    parser.add_argument("--split", default="val", help="the validation split the panels show (default: val)")
    parser.add_argument("--no-teacher", action="store_true", help="runs without a teacher (no diagnostics); implied by "
                        "a --method without one (Supervised, DML, BDKD, TfKDVirtual)")
    parser.add_argument("--name", default=None, help="the workspace's name")
    parser.add_argument("--dry-run", action="store_true", help="list the panels' keys; save nothing")
    args = parser.parse_args(list(argv))
    distillation = not args.no_teacher
    if args.method is not None:
        distillation = distillation and _has_teacher(parser, args.method)
    workspace = build_workspace(args.entity, args.project, args.method, args.split, args.chain,
                                distillation=distillation, name=args.name)
    keys = panel_keys(workspace)
    if args.dry_run:
        for key, kind in keys.items():
            print(f"{kind:8} {key}")
        return 0
    from lit_kd.wandb_mode import has_wandb_credentials

    if not has_wandb_credentials():
        print("lit-kd dashboard: no W&B credentials (WANDB_API_KEY or `wandb login`): the workspace of "
              f"{len(keys)} panels was built but not saved. Log in, or use --dry-run to list its panels.")
        return 1
    workspace.save()
    print(f"saved workspace {workspace.name!r}: {workspace.url}")
    return 0
