"""Tables, figures and the data-driven verdict of the accuracy study (markdown + matplotlib PNGs).

Everything here reads the aggregated rows of :func:`experiments.accuracy.aggregate`
and writes nothing but PNGs; the markdown comes back as strings.

Criteria (applied to every row = dataset x setting x learner x snapshot, 3 seeds):

1. **help**: the paired gain over the base, mean over seeds, is ``>= 1`` point
   **and** larger than its standard deviation over seeds (ddof=1).
2. **harm**: the mean gain is below ``-0.2`` points (the product's budget).

Example
-------
>>> from experiments.evidence import fmt_ms
>>> fmt_ms((91.234, 0.5)), fmt_ms((1.0, 0.25), signed=True)
('91.2 ± 0.5', '+1.0 ± 0.2')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["fmt_ms", "helps", "harms", "summary_table", "dataset_tables", "make_figures",
           "verdict", "PRODUCT_DEFAULT", "HELP_POINTS", "HARM_POINTS"]

#: The variant that ``refine_batches(W, batches, validation=..., bias=b)`` runs with its defaults.
PRODUCT_DEFAULT = "bias"
HELP_POINTS = 1.0
HARM_POINTS = 0.2

VARIANT_ORDER = ("bias", "paper", "logits", "cand_norm", "purified", "heldout")
LEARNER_LABEL = {"mlp_ce": "MLP CE", "mlp_gce": "MLP GCE", "mlp_ce_psp": "MLP CE + periodic PSP",
                 "logreg": "logistic regression (pixels)", "ridge": "ridge (pixels)",
                 "mlp_ce_long": "MLP CE, long (memorizing)"}


def fmt_ms(ms, signed: bool = False) -> str:
    """``(mean, std)`` as ``"m ± s"`` with one decimal."""
    m, s = ms
    return (f"{m:+.1f}" if signed else f"{m:.1f}") + f" ± {s:.1f}"


def helps(gain_ms) -> bool:
    """Criterion 1 of the module docstring."""
    m, s = gain_ms
    return m >= HELP_POINTS and m > s


def harms(gain_ms) -> bool:
    """Criterion 2 of the module docstring."""
    return gain_ms[0] < -HARM_POINTS


def _variants(rows) -> list[str]:
    present = {v for r in rows for v in r["variants"]}
    return [v for v in VARIANT_ORDER if v in present]


def _noise_cell(row) -> str:
    m, s = row["noise_actual"]
    if row["setting"].startswith("pl"):
        return f"{100 * m:.1f}% of wrong classes"
    return f"{100 * m:.1f} ± {100 * s:.1f}%"


def summary_table(rows: list[dict]) -> str:
    """One line per variant: how the automatic k and the best fixed k (oracle) fare over all rows."""
    out = ["| variant | rows | auto: mean gain | auto: worst row (mean) | auto: worst seed | auto: rows changed "
           "| auto helps (≥1, >std) | auto harms (< −0.2) | unguarded auto: mean gain / worst row / helps / harms / rows changed "
           "| oracle fixed k helps | oracle fixed k: best row |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in _variants(rows):
        rs = [r for r in rows if v in r["variants"]]
        g = [r["variants"][v]["auto_gain"] for r in rs]
        worst = min(rs, key=lambda r: r["variants"][v]["auto_gain"][0])
        worst_seed = min(r["variants"][v]["auto_worst_gain"] for r in rs)
        changed = sum(1 for r in rs if r["variants"][v]["auto_changed"] > 0)
        n_help = sum(helps(x) for x in g)
        n_harm = sum(harms(x) for x in g)
        o_help = sum(helps(r["variants"][v]["oracle_gain"]) for r in rs)
        ug = [r["variants"][v].get("unguarded_gain", (float("nan"), 0.0)) for r in rs]
        ug_cell = (f"{np.mean([x[0] for x in ug]):+.2f} / {min(x[0] for x in ug):+.2f} / {sum(helps(x) for x in ug)} / "
                   f"{sum(harms(x) for x in ug)} / {sum(1 for r in rs if r['variants'][v].get('unguarded_changed', 0) > 0)}")
        best = max(rs, key=lambda r: r["variants"][v]["oracle_gain"][0])
        bo = best["variants"][v]
        out.append(
            f"| `{v}` | {len(rs)} | {np.mean([x[0] for x in g]):+.2f} | {worst['variants'][v]['auto_gain'][0]:+.2f} "
            f"({worst['dataset']} {worst['setting']} {worst['learner']} {worst['snapshot']}) | {worst_seed:+.2f} | {changed} "
            f"| {n_help} | {n_harm} | {ug_cell} | {o_help} | {fmt_ms(bo['oracle_gain'], True)} at k={bo['oracle_k']} "
            f"({best['dataset']} {best['setting']} {best['learner']} {best['snapshot']}) |")
    return "\n".join(out)


def dataset_tables(rows: list[dict], dataset: str, snapshot: str) -> str:
    """Per dataset and snapshot: base accuracy, then the gain of each variant (auto k; oracle for `paper`)."""
    rs = [r for r in rows if r["dataset"] == dataset and r["snapshot"] == snapshot]
    if not rs:
        return ""
    vs = _variants(rs)
    head = ("| setting | actual noise | learner | epoch | base acc | "
            + " | ".join(f"`{v}` auto" for v in vs) + f" | `{PRODUCT_DEFAULT}` auto, unguarded | `paper` best fixed k (oracle) |")
    out = [head, "|" + "---|" * (7 + len(vs))]
    for r in rs:
        cells = []
        for v in vs:
            o = r["variants"].get(v)
            if o is None:
                cells.append("—")
                continue
            c = fmt_ms(o["auto_gain"], True)
            if helps(o["auto_gain"]):
                c = f"**{c}**"
            elif harms(o["auto_gain"]):
                c = f"_{c}_"
            cells.append(c)
        ug = r["variants"][PRODUCT_DEFAULT].get("unguarded_gain")
        cells.append("—" if ug is None else (f"**{fmt_ms(ug, True)}**" if helps(ug) else
                                              f"_{fmt_ms(ug, True)}_" if harms(ug) else fmt_ms(ug, True)))
        p = r["variants"]["paper"]
        out.append(f"| {r['setting']} | {_noise_cell(r)} | {LEARNER_LABEL.get(r['learner'], r['learner'])} | {r['epoch'] if r['learner'] != 'ridge' else '—'} "
                   f"| {fmt_ms(r['base'])} | " + " | ".join(cells)
                   + f" | {fmt_ms(p['oracle_gain'], True)} (k={p['oracle_k']}/{p['gain_by_k'].__len__() - 1}) |")
    return "\n".join(out)


# -------------------------------------------------------------------- figures
def make_figures(rows: list[dict], fig_dir: Path) -> list[Path]:
    """Write the PNGs; return their paths.

    - ``accuracy_gain_vs_k_<dataset>.png``: mean gain of ``W*(k)`` over the base
      against ``k / m`` (the paper's fixed-k sweep), per setting, for six
      (learner, snapshot, variant) panels.
    - ``accuracy_auto_gain.png``: the automatic k's gain, every row, per variant.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    panels = [("mlp_ce", "late", "paper"), ("mlp_ce", "late", "purified"), ("mlp_ce", "early", "paper"),
              ("mlp_gce", "late", "purified"), ("logreg", "late", "bias"), ("ridge", "late", "bias")]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharey=False)
        for ax, (ln, sn, v) in zip(axes.ravel(), panels):
            for r in rows:
                if (r["dataset"], r["learner"], r["snapshot"]) != (ds, ln, sn) or v not in r["variants"]:
                    continue
                g = np.asarray(r["variants"][v]["gain_by_k"])
                ax.plot(np.arange(g.shape[0]) / (g.shape[0] - 1), g, marker=".", label=r["setting"])
            ax.axhline(0.0, color="k", lw=0.8)
            ax.axhline(HELP_POINTS, color="g", lw=0.6, ls="--")
            ax.set_title(f"{LEARNER_LABEL.get(ln, ln)}, {sn}, `{v}`", fontsize=9)
            ax.set_xlabel("k / m (k = m: unchanged)")
            ax.set_ylabel("test-accuracy gain (points)")
            ax.set_ylim(bottom=max(ax.get_ylim()[0], -30))
            ax.legend(fontsize=7)
        fig.suptitle(f"{ds}: LIP with a fixed k, mean over seeds (gain over the base model)")
        fig.tight_layout()
        p = fig_dir / f"accuracy_gain_vs_k_{ds}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)

    vs = _variants(rows)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), sharey=True)
    markers = {"digits": "o", "fashion-mnist": "s", "fonts": "^"}
    colors = {"digits": "C0", "fashion-mnist": "C1", "fonts": "C2"}
    for ax, key, title in ((axes[0], "auto_gain", "automatic k (core default: significance guard)"),
                           (axes[1], "unguarded_gain", "automatic k without the guard (confidence=None)")):
        rng = np.random.default_rng(0)
        for i, v in enumerate(vs):
            for ds in dict.fromkeys(r["dataset"] for r in rows):
                g = [r["variants"][v][key][0] for r in rows
                     if r["dataset"] == ds and v in r["variants"] and key in r["variants"][v]]
                ax.scatter(i + rng.uniform(-0.25, 0.25, len(g)), g, s=14, marker=markers.get(ds, "x"),
                           color=colors.get(ds, "C3"), alpha=0.7, label=ds if i == 0 else None)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.axhline(-HARM_POINTS, color="r", lw=0.6, ls="--", label="−0.2 budget")
        ax.axhline(HELP_POINTS, color="g", lw=0.6, ls="--", label="+1 target")
        ax.set_xticks(range(len(vs)), vs)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean gain over base (points)")
    fig.suptitle("LIP with k chosen on a noisy held-out split: gain per (dataset, setting, learner, snapshot)")
    fig.tight_layout()
    p = fig_dir / "accuracy_auto_gain.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    return paths


# -------------------------------------------------------------------- verdict
def _where(r: dict) -> str:
    return f"{r['dataset']} {r['setting']} {r['learner']} {r['snapshot']}"


def _helping(rows: list[dict], key: str, label) -> list[tuple[float, str]]:
    """``(mean gain, text)`` of every (row, variant) whose ``key`` gain helps, best first."""
    out = [(o[key][0], f"{label(v, o, r)}: {fmt_ms(o[key], True)}")
           for r in rows for v, o in r["variants"].items() if key in o and helps(o[key])]
    out.sort(reverse=True)
    return out


def verdict(rows: list[dict]) -> str:
    """Data-driven verdict sentences (the criteria of the module docstring)."""
    lines = []
    d = [r for r in rows if PRODUCT_DEFAULT in r["variants"]]
    worst = min(d, key=lambda r: r["variants"][PRODUCT_DEFAULT]["auto_gain"][0])
    wg = worst["variants"][PRODUCT_DEFAULT]["auto_gain"][0]
    n_harm = sum(harms(r["variants"][PRODUCT_DEFAULT]["auto_gain"]) for r in d)
    n_changed = sum(1 for r in d if r["variants"][PRODUCT_DEFAULT]["auto_changed"] > 0)
    lines.append(
        f"- **The paper's LIP, automatic** (`tail=\"diagonal\"`, the product default until the full-tail study "
        f"below; `rank=\"auto\"` on a noisy held-out split, the layer's bias, raw targets, scale 1): "
        f"over {len(d)} rows the worst mean change is {wg:+.2f} points ({worst['dataset']} {worst['setting']} "
        f"{worst['learner']} {worst['snapshot']}); {n_harm} row(s) below −{HARM_POINTS}; it changed the weight in "
        f"{n_changed} row(s) for at least one seed. Target (never worse than −{HARM_POINTS}): "
        f"{'MET' if n_harm == 0 else 'NOT MET'}.")
    found = _helping(rows, "auto_gain", lambda v, o, r: f"`{v}` auto on {_where(r)}")
    if found:
        lines.append(f"- **Gains ≥ {HELP_POINTS:g} point beyond one std with the automatic k** ({len(found)} row(s)): "
                     + "; ".join(t for _, t in found[:8]) + ("; …" if len(found) > 8 else "") + ".")
    else:
        lines.append(f"- **No row** gains ≥ {HELP_POINTS:g} point beyond one std with the automatic k, in any variant.")
    ung = _helping(rows, "unguarded_gain", lambda v, o, r: f"`{v}` on {_where(r)}")
    if any("unguarded_gain" in o for r in rows for o in r["variants"].values()):
        ud = [r["variants"][PRODUCT_DEFAULT]["unguarded_gain"][0] for r in d if "unguarded_gain" in r["variants"][PRODUCT_DEFAULT]]
        lines.append(
            f"- **Without the significance guard** (`confidence=None`: the best noisy held-out score wins), the default "
            f"variant's worst mean change is {min(ud):+.2f} points and {sum(x < -HARM_POINTS for x in ud)} row(s) fall "
            f"below −{HARM_POINTS}; rows where some unguarded variant helps: {len(ung)}"
            + (": " + "; ".join(t for _, t in ung[:6]) + ("; …" if len(ung) > 6 else "") if ung else "") + ".")
    oracle = _helping(rows, "oracle_gain", lambda v, o, r: f"`{v}` k={o['oracle_k']} on {_where(r)}")
    if oracle:
        lines.append(f"- Best fixed k chosen **on the test set** (an optimistic oracle, not a method) reaches the "
                     f"+{HELP_POINTS:g} bar in {len(oracle)} row(s): " + "; ".join(t for _, t in oracle[:8])
                     + ("; …" if len(oracle) > 8 else "") + ".")
    else:
        lines.append(f"- Even the best fixed k chosen on the test set (an optimistic oracle) never reaches +{HELP_POINTS:g} "
                     "point beyond one std.")
    return "\n".join(lines)
